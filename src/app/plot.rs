//! Charts of losses (the paper's Figures 3 and 5-27): the binary phenotype of several losses
//! against cross-entropy, the surface L(y, p), and a scatter of fitness under two
//! augmentations. PNG or SVG by the file's extension (plotters; the font is embedded, so PNGs
//! render the same on any machine).

use crate::ir::Graph;
use crate::reference::interp::eval_scalar;
use crate::search::store::{Db, Store, StoreError};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Why a chart was not drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}: the file name must end in .png or .svg")]
    Format(PathBuf),
    #[error("cannot write {0}: {1}")]
    Unwritable(PathBuf, String),
    #[error("{0}: L(1, p) is not finite anywhere on (0, 1); nothing to draw")]
    NothingFinite(String),
    #[error("no losses to plot")]
    NoLosses,
    #[error("no points to draw")]
    NoPoints,
    #[error("run `{run}` has no augmentation `{aug}` (it has {has})")]
    NoAugmentation { run: String, aug: String, has: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

impl crate::error::Classify for PlotError {
    fn blame(&self) -> crate::error::Blame {
        use crate::error::Blame;
        match self {
            PlotError::Store(e) => e.blame(),
            PlotError::Draw { .. } => Blame::Failure,
            _ => Blame::Input,
        }
    }
}

/// A drawing backend's message, before it is tied to the file.
struct DrawMsg(String);

/// The font for bitmap output, registered once.
fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            unreachable!("the embedded font parses");
        }
    });
}

/// The output format of a path (where a file can be made).
fn format(path: &Path) -> Result<&'static str, PlotError> {
    if let Some(why) = crate::error::unwritable(path) {
        return Err(PlotError::Unwritable(path.to_path_buf(), why));
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => Ok("png"),
        Some("svg") => Ok("svg"),
        _ => Err(PlotError::Format(path.to_path_buf())),
    }
}

/// Checks the output's format and folder before any work (a scatter reads a store first).
pub fn check_path(path: &Path) -> Result<(), PlotError> {
    format(path).map(|_| ())
}

macro_rules! with_backend {
    ($path:expr, $size:expr, |$root:ident| $body:expr) => {{
        let path: &Path = $path;
        let e = |e: &dyn std::fmt::Display| PlotError::Draw { path: path.to_path_buf(), message: e.to_string() };
        match format(path)? {
            "png" => {
                font();
                let $root = BitMapBackend::new(path, $size).into_drawing_area();
                $body.map_err(|x: DrawMsg| e(&x.0))?;
                $root.present().map_err(|x| e(&x))?;
            }
            _ => {
                font(); // the SVG backend measures text with it
                let $root = SVGBackend::new(path, $size).into_drawing_area();
                $body.map_err(|x: DrawMsg| e(&x.0))?;
                $root.present().map_err(|x| e(&x))?;
            }
        }
        Ok(())
    }};
}

fn s<E: std::fmt::Display>(e: E) -> DrawMsg {
    DrawMsg(e.to_string())
}

/// Points of the phenotype curves: p from 0.001 to 0.999.
const CURVE_POINTS: usize = 400;

/// `L(1, p)` of a one-output loss over p (non-finite values dropped).
pub fn curve(g: &Graph) -> Vec<(f64, f64)> {
    let out = g.outputs[0].1;
    (0..CURVE_POINTS)
        .map(|i| 0.001 + 0.998 * i as f64 / (CURVE_POINTS - 1) as f64)
        .map(|p| (p, eval_scalar(g, out, 1.0, p)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

fn normalised(c: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (lo, hi) = c.iter().fold((f64::MAX, f64::MIN), |(l, h), &(_, v)| (l.min(v), h.max(v)));
    c.iter().map(|&(p, v)| (p, if hi > lo { (v - lo) / (hi - lo) } else { 0.0 })).collect()
}

/// A y range covering the values, robust to a few huge ones (the 2nd to 98th percentile,
/// widened by 10 %).
fn y_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0..1.0;
    }
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v[v.len() * 2 / 100], v[(v.len() * 98 / 100).min(v.len() - 1)]);
    let pad = ((hi - lo) * 0.1).max(1e-6);
    lo - pad..hi + pad
}

/// The binary phenotype chart: `L(1, p)` of each loss, raw (left) and normalised to [0, 1]
/// (right). Pass cross-entropy among `losses` to compare against it.
pub fn phenotype(losses: &[(String, Graph)], path: &Path) -> Result<(), PlotError> {
    if losses.is_empty() {
        return Err(PlotError::NoLosses);
    }
    let curves: Vec<(String, Vec<(f64, f64)>)> = losses.iter().map(|(n, g)| (n.clone(), curve(g))).collect();
    if let Some((n, _)) = curves.iter().find(|(_, c)| c.len() < 2) {
        return Err(PlotError::NothingFinite(n.clone()));
    }
    with_backend!(path, (1400, 560), |root| {
        (|| -> Result<(), DrawMsg> {
            root.fill(&WHITE).map_err(s)?;
            let (left, right) = root.split_horizontally(700);
            for (area, norm) in [(&left, false), (&right, true)] {
                let data: Vec<(String, Vec<(f64, f64)>)> =
                    curves.iter().map(|(n, c)| (n.clone(), if norm { normalised(c) } else { c.clone() })).collect();
                let yr = if norm { -0.05..1.05 } else { y_range(data.iter().flat_map(|(_, c)| c.iter().map(|v| v.1))) };
                let title = if norm { "L(1, p), normalised to [0, 1]" } else { "L(1, p)" };
                let mut chart = ChartBuilder::on(area)
                    .caption(title, ("sans-serif", 24))
                    .margin(15)
                    .x_label_area_size(45)
                    .y_label_area_size(65)
                    .build_cartesian_2d(0f64..1f64, yr.clone())
                    .map_err(s)?;
                chart.configure_mesh().x_desc("p (true class)").y_desc("loss").draw().map_err(s)?;
                for (i, (name, c)) in data.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    let pts = c.iter().map(|&(p, v)| (p, v.clamp(yr.start, yr.end)));
                    chart
                        .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                        .map_err(s)?
                        .label(name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 16))
                    .draw()
                    .map_err(s)?;
            }
            Ok(())
        })()
    })
}

/// The surface `L(y, p)` over y, p in [0.01, 0.99] (values clipped to a robust range).
pub fn surface(name: &str, g: &Graph, path: &Path) -> Result<(), PlotError> {
    let out = g.outputs[0].1;
    let n = 40;
    let axis: Vec<f64> = (0..n).map(|i| 0.01 + 0.98 * i as f64 / (n - 1) as f64).collect();
    let f = |y: f64, p: f64| eval_scalar(g, out, y, p);
    let zr = y_range(axis.iter().flat_map(|&y| axis.iter().map(move |&p| (y, p))).map(|(y, p)| f(y, p)));
    with_backend!(path, (900, 760), |root| {
        (|| -> Result<(), DrawMsg> {
            root.fill(&WHITE).map_err(s)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(format!("{name}: L(y, p)"), ("sans-serif", 26))
                .margin(20)
                .build_cartesian_3d(0f64..1f64, zr.clone(), 0f64..1f64)
                .map_err(s)?;
            chart.with_projection(|mut pb| {
                pb.yaw = 0.6;
                pb.pitch = 0.35;
                pb.scale = 0.85;
                pb.into_matrix()
            });
            chart.configure_axes().light_grid_style(BLACK.mix(0.12)).max_light_lines(4).draw().map_err(s)?;
            let clip = |v: f64| if v.is_finite() { v.clamp(zr.start, zr.end) } else { zr.end };
            chart
                .draw_series(
                    SurfaceSeries::xoz(axis.iter().copied(), axis.iter().copied(), |p, y| clip(f(y, p)))
                        .style(BLUE.mix(0.35).filled()),
                )
                .map_err(s)?;
            // Axis names: x is p, the depth axis is y, height is the loss.
            root.draw_text("x: p    depth: y    height: L", &("sans-serif", 18).into_text_style(&root), (20, 730))
                .map_err(s)?;
            Ok(())
        })()
    })
}

/// A scatter of paired values (the paper's Figure 3: fitness under two augmentations).
pub fn scatter(points: &[(f64, f64)], x_label: &str, y_label: &str, title: &str, path: &Path) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::NoPoints);
    }
    let lo = points.iter().flat_map(|p| [p.0, p.1]).fold(f64::MAX, f64::min);
    let hi = points.iter().flat_map(|p| [p.0, p.1]).fold(f64::MIN, f64::max);
    let pad = ((hi - lo) * 0.05).max(0.01);
    let r = lo - pad..hi + pad;
    with_backend!(path, (760, 720), |root| {
        (|| -> Result<(), DrawMsg> {
            root.fill(&WHITE).map_err(s)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(65)
                .build_cartesian_2d(r.clone(), r.clone())
                .map_err(s)?;
            chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(s)?;
            chart.draw_series(LineSeries::new([(r.start, r.start), (r.end, r.end)], BLACK.mix(0.3))).map_err(s)?;
            chart
                .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 4, BLUE.mix(0.6).filled())))
                .map_err(s)?;
            Ok(())
        })()
    })
}

/// The points of the paper's Figure 3 from a `lossc sample` run: each sampled loss's fitness
/// under augmentations `x` and `y` (losses without both results are left out).
pub fn sample_points(db: &Db, run: &str, x: &str, y: &str) -> Result<Vec<(f64, f64)>, PlotError> {
    use crate::search::run::SampleSettings;
    use crate::train::TrainSpec;
    let store = Store::open_existing(db)?;
    let settings = match store.run_settings(run)? {
        Some((kind, s)) if kind == "sample" => s,
        _ => return Err(StoreError::NoRun { path: db.to_string(), kind: "sample", run: run.into() }.into()),
    };
    let s: SampleSettings =
        serde_json::from_value(settings).map_err(|e| StoreError::Corrupt(format!("{}: run `{run}`: {e}", db)))?;
    for a in [x, y] {
        if !s.augs.iter().any(|have| have == a) {
            return Err(PlotError::NoAugmentation { run: run.into(), aug: a.into(), has: s.augs.join(", ") });
        }
    }
    let spec = |a: &str| TrainSpec { aug: a.to_string(), ..s.spec.clone() };
    let mut points = Vec::new();
    for c in store.candidates(run)? {
        let Some(key) = c.key else { continue };
        if let (Some(a), Some(b)) = (store.result(&key, &spec(x))?, store.result(&key, &spec(y))?) {
            points.push((a.fitness, b.fitness));
        }
    }
    Ok(points)
}
