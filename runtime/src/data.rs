//! Data sets: Fashion-MNIST (IDX, gzip; Debian's `dataset-fashion-mnist`), CIFAR-10 and
//! CIFAR-100 (their binary formats), as [N, C, H, W] f32 in [0, 1].

use std::io::Read;
use std::path::Path;

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Images and labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// (channels, height, width)
    pub shape: (usize, usize, usize),
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image_size(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }
    /// Images `from..to` and their labels.
    pub fn slice(&self, from: usize, to: usize) -> Dataset {
        let s = self.image_size();
        Dataset {
            images: self.images[from * s..to * s].to_vec(),
            labels: self.labels[from..to].to_vec(),
            shape: self.shape,
            classes: self.classes,
        }
    }
    /// (training, validation): the last `n` images are held out (the paper: 5,000).
    pub fn split_validation(&self, n: usize) -> (Dataset, Dataset) {
        let cut = self.len().saturating_sub(n);
        (self.slice(0, cut), self.slice(cut, self.len()))
    }
}

/// A data error: the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DataError {
    pub path: String,
    pub problem: String,
}

fn fail(path: &Path, problem: impl Into<String>) -> DataError {
    DataError { path: path.display().to_string(), problem: problem.into() }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| fail(path, e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| fail(path, format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX file (gzip or not): its dimensions and bytes.
fn idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let b = read_file(path)?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] as usize != want_dims {
        return Err(fail(path, format!("not an IDX file of unsigned bytes with {want_dims} dimensions")));
    }
    let mut dims = Vec::new();
    for i in 0..want_dims {
        let at = 4 + 4 * i;
        let d = b.get(at..at + 4).ok_or_else(|| fail(path, "truncated header"))?;
        dims.push(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize);
    }
    let body = b[4 + 4 * want_dims..].to_vec();
    let size = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if size != Some(body.len()) {
        return Err(fail(path, format!("{} data bytes for dimensions {dims:?}", body.len())));
    }
    Ok((dims, body))
}

/// Fashion-MNIST from `dir` as (train 60k, test 10k), zero-padded from 28x28 to 32x32.
pub fn fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let load = |img: &str, lab: &str| -> Result<Dataset, DataError> {
        let find = |name: &str| {
            let gz = dir.join(format!("{name}.gz"));
            if gz.exists() { gz } else { dir.join(name) }
        };
        let (dims, pixels) = idx(&find(img), 3)?;
        let (ldims, labels) = idx(&find(lab), 1)?;
        if dims[0] != ldims[0] {
            return Err(fail(dir, format!("{} images but {} labels", dims[0], ldims[0])));
        }
        let (n, h, w) = (dims[0], dims[1], dims[2]);
        if h == 0 || w == 0 || h > 32 || w > 32 {
            return Err(fail(&find(img), format!("images are {h}x{w}; the surrogate takes 1x1 up to 32x32")));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= 10) {
            return Err(fail(&find(lab), format!("label {l} (image {i}) is out of range for 10 classes")));
        }
        let (ph, pw) = (32, 32);
        let (oy, ox) = ((ph - h) / 2, (pw - w) / 2);
        let mut images = vec![0.0; n * ph * pw];
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    images[(i * ph + y + oy) * pw + x + ox] = pixels[(i * h + y) * w + x] as f32 / 255.0;
                }
            }
        }
        Ok(Dataset { images, labels: labels.iter().map(|&l| l as u32).collect(), shape: (1, ph, pw), classes: 10 })
    };
    Ok((
        load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    ))
}

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    Hundred,
}

/// CIFAR records from binary files: `[label][3072 pixels]` (CIFAR-10) or
/// `[coarse][fine][3072 pixels]` (CIFAR-100, fine labels used).
pub fn cifar_files(kind: Cifar, files: &[std::path::PathBuf]) -> Result<Dataset, DataError> {
    let (skip, classes) = match kind {
        Cifar::Ten => (1, 10),
        Cifar::Hundred => (2, 100),
    };
    let rec = skip + 3072;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let b = read_file(path)?;
        if b.is_empty() || b.len() % rec != 0 {
            return Err(fail(path, format!("{} bytes is not a whole number of {rec}-byte CIFAR records", b.len())));
        }
        for r in b.chunks_exact(rec) {
            let label = r[skip - 1] as u32;
            if label as usize >= classes {
                return Err(fail(path, format!("label {label} out of range for {classes} classes")));
            }
            labels.push(label);
            images.extend(r[skip..].iter().map(|&v| v as f32 / 255.0));
        }
    }
    Ok(Dataset { images, labels, shape: (3, 32, 32), classes })
}

/// CIFAR-10 (`data_batch_1..5.bin`, `test_batch.bin`) or CIFAR-100 (`train.bin`, `test.bin`)
/// from a directory, as (train, test).
pub fn cifar(kind: Cifar, dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let (train, test): (Vec<String>, Vec<String>) = match kind {
        Cifar::Ten => ((1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), vec!["test_batch.bin".into()]),
        Cifar::Hundred => (vec!["train.bin".into()], vec!["test.bin".into()]),
    };
    let paths = |names: Vec<String>| names.into_iter().map(|n| dir.join(n)).collect::<Vec<_>>();
    Ok((cifar_files(kind, &paths(train))?, cifar_files(kind, &paths(test))?))
}
