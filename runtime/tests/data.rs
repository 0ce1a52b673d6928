//! The data readers on files the test writes in the standard formats.

use lossc_runtime::data::{self, Cifar};
use std::io::Write;

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An IDX file of unsigned bytes: the header with its dimensions, then the body.
fn idx(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(body);
    b
}

/// A CIFAR record: label byte(s) then 1024 red, 1024 green, 1024 blue bytes.
fn record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(seed)));
    r
}

#[test]
fn cifar10_reads_the_five_training_batches_and_the_test_batch() {
    let dir = temp("c10");
    for i in 1..=5u8 {
        let bytes: Vec<u8> = (0..3u8).flat_map(|k| record(&[(i + k) % 10], i + k)).collect();
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), record(&[7], 3)).unwrap();
    let (train, test) = data::cifar(Cifar::Ten, &dir).unwrap();
    assert_eq!((train.len(), test.len()), (15, 1));
    assert_eq!(train.shape, (3, 32, 32));
    assert_eq!(train.labels[..3], [1, 2, 3]);
    assert_eq!(test.labels, [7]);
    // pixel 5 of the red plane of the test image is 5 * 3 = 15, scaled to [0, 1]
    assert_eq!(test.images[5], 15.0 / 255.0);
    // green plane starts at 1024: byte (1024 + 2) * 3 mod 256
    assert_eq!(test.images[1024 + 2], ((1026u32 * 3) % 256) as f32 / 255.0);
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = temp("c100");
    std::fs::write(dir.join("train.bin"), [record(&[3, 42], 1), record(&[19, 99], 2)].concat()).unwrap();
    std::fs::write(dir.join("test.bin"), record(&[0, 5], 1)).unwrap();
    let (train, test) = data::cifar(Cifar::Hundred, &dir).unwrap();
    assert_eq!(train.labels, [42, 99]);
    assert_eq!(test.labels, [5]);
    assert_eq!(train.classes, 100);
}

#[test]
fn broken_files_are_reported_with_their_path() {
    let dir = temp("bad");
    std::fs::write(dir.join("train.bin"), vec![0u8; 100]).unwrap();
    std::fs::write(dir.join("test.bin"), record(&[0, 200], 1)).unwrap();
    let e = data::cifar(Cifar::Hundred, &dir).unwrap_err();
    assert!(e.to_string().contains("train.bin") && e.to_string().contains("3074-byte"), "{e}");
    std::fs::write(dir.join("train.bin"), record(&[0, 1], 1)).unwrap();
    let e = data::cifar(Cifar::Hundred, &dir).unwrap_err();
    assert!(e.to_string().contains("label 200 out of range"), "{e}");
}

#[test]
fn idx_files_gzip_or_not_pad_to_32x32() {
    let dir = temp("idx");
    let pixels: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 251) as u8).collect();
    let images = idx(&[2, 28, 28], &pixels);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&images).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[2], &[4, 9])).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[1, 28, 28], &pixels[..784])).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[1], &[1])).unwrap();
    let (train, test) = data::fashion_mnist(&dir).unwrap();
    assert_eq!((train.len(), test.len(), train.shape), (2, 1, (1, 32, 32)));
    assert_eq!(train.labels, [4, 9]);
    assert_eq!(train.images[0], 0.0); // padding
    assert_eq!(train.images[2 * 32 + 2], pixels[0] as f32 / 255.0); // (0, 0) lands at (2, 2)
    assert_eq!(train.images[2 * 32 + 3], pixels[1] as f32 / 255.0);
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[2], &[1, 2])).unwrap();
    assert!(data::fashion_mnist(&dir).unwrap_err().to_string().contains("1 images but 2 labels"));
}

/// Headers whose dimensions overflow, images the surrogate cannot take (0x0, over 32x32) and
/// labels out of range are errors that name the file, not panics or silent misses.
#[test]
fn malformed_idx_files_are_errors() {
    let dir = temp("idx-bad");
    let write = |images: Vec<u8>, labels: Vec<u8>| {
        std::fs::write(dir.join("train-images-idx3-ubyte"), &images).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), &images).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &labels).unwrap();
    };
    let err = || data::fashion_mnist(&dir).unwrap_err().to_string();
    write(idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 8]), idx(&[1], &[0]));
    assert!(err().contains("data bytes for dimensions"), "{}", err());
    write(idx(&[1, 0, 0], &[]), idx(&[1], &[0]));
    assert!(err().contains("0x0"), "{}", err());
    write(idx(&[1, 40, 40], &[0; 1600]), idx(&[1], &[0]));
    assert!(err().contains("40x40") && err().contains("train-images"), "{}", err());
    write(idx(&[2, 2, 2], &[0; 8]), idx(&[2], &[3, 10]));
    assert!(err().contains("label 10 (image 1)") && err().contains("train-labels"), "{}", err());
}
