//! Charts: every kind is written as PNG and SVG, and each file is a valid, non-empty image
//! (the PNG decodes, has the asked size and more than a background; the SVG is an <svg>
//! document with the curves and the loss names in it).

use lossc::app::plot;
use std::path::{Path, PathBuf};

fn parse(src: &str) -> lossc::ir::Graph {
    lossc::syntax::parse(src).unwrap()
}

fn out(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-plot-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Decodes a PNG: (width, height, distinct colours).
fn png_info(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    (info.width, info.height, colours.len())
}

fn check_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "{}", &text[..80.min(text.len())]);
    assert!(text.trim_end().ends_with("</svg>"));
    for m in must_contain {
        // Elements are matched by their opening, text by a whole line (the SVG backend writes
        // each text on its own line).
        let found = if m.starts_with('<') { text.contains(m) } else { text.lines().any(|l| l.trim() == *m) };
        assert!(found, "{} lacks {m}", path.display());
    }
}

#[test]
fn phenotype_charts_are_valid_images_with_every_loss() {
    let losses = vec![
        ("a2".to_string(), parse(&std::fs::read_to_string("examples/a2.loss").unwrap())),
        ("ce".to_string(), parse("loss ce = -y * ln(p);")),
    ];
    let png = out("phenotype.png");
    plot::phenotype(&losses, &png).unwrap();
    let (w, h, colours) = png_info(&png);
    assert_eq!((w, h), (1400, 560));
    assert!(colours > 20, "only {colours} colours: nothing drawn");
    let svg = out("phenotype.svg");
    plot::phenotype(&losses, &svg).unwrap();
    check_svg(&svg, &["<polyline", "a2", "ce", "L(1, p), normalised to [0, 1]"]);
}

#[test]
fn surfaces_and_scatters_are_valid_images() {
    let g = parse("loss l = -y * ln(p) + (1 - y) * square(p);");
    let png = out("surface.png");
    plot::surface("l", &g, &png).unwrap();
    assert!(png_info(&png).2 > 20);
    let svg = out("surface.svg");
    plot::surface("l", &g, &svg).unwrap();
    check_svg(&svg, &["<polygon", "l: L(y, p)"]);
    let points = [(0.5, 0.52), (0.7, 0.66), (0.8, 0.83)];
    let png = out("scatter.png");
    plot::scatter(&points, "base", "cutout", "three losses", &png).unwrap();
    assert!(png_info(&png).2 > 5);
    let svg = out("scatter.svg");
    plot::scatter(&points, "base", "cutout", "three losses", &svg).unwrap();
    check_svg(&svg, &["<circle", "cutout"]);
}

#[test]
fn bad_paths_and_empty_inputs_are_errors() {
    let g = parse("loss ce = -y * ln(p);");
    let e = plot::surface("ce", &g, Path::new("/tmp/x.jpg")).unwrap_err();
    assert!(matches!(e, plot::PlotError::Format(_)) && e.to_string().contains(".png or .svg"), "{e}");
    assert_eq!(lossc::error::Classify::blame(&e), lossc::error::Blame::Input);
    assert!(plot::scatter(&[], "a", "b", "t", &out("empty.svg")).is_err());
    let nan = parse("loss l = y / (p - p);");
    assert!(plot::phenotype(&[("l".into(), nan)], &out("nan.svg")).is_err());
}
