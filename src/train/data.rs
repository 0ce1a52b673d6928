//! The data sets a [`super::TrainSpec`] names, split into training, validation and test.

use lossc_runtime::data::{self, Dataset};
use std::path::Path;

/// A data set split for training: (train, validation, test).
pub type Splits = (Dataset, Dataset, Dataset);

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data `{0}`: expected fashion-mnist[:DIR], cifar10:DIR or cifar100:DIR")]
    Unknown(String),
    #[error("{0} does not exist (apt install dataset-fashion-mnist, or give fashion-mnist:DIR)")]
    Missing(String),
    #[error(transparent)]
    Read(#[from] data::DataError),
    #[error("{val} validation images requested; the training set has only {have}")]
    TooFew { val: usize, have: usize },
}
crate::error::classify!(DataError, input: [Unknown, Missing, Read, TooFew]);

/// Loads `fashion-mnist[:DIR]`, `cifar10:DIR` or `cifar100:DIR`, holding out the last `val`
/// training images for validation.
pub fn load_data(spec: &str, val: usize) -> Result<Splits, DataError> {
    let (kind, dir) = spec.split_once(':').unwrap_or((spec, ""));
    let (train, test) = match kind {
        "fashion-mnist" => {
            let dir = if dir.is_empty() { data::FASHION_MNIST_DIR } else { dir };
            if !Path::new(dir).exists() {
                return Err(DataError::Missing(dir.to_string()));
            }
            data::fashion_mnist(Path::new(dir))?
        }
        "cifar10" | "cifar100" if !dir.is_empty() => {
            let k = if kind == "cifar10" { data::Cifar::Ten } else { data::Cifar::Hundred };
            data::cifar(k, Path::new(dir))?
        }
        _ => return Err(DataError::Unknown(spec.to_string())),
    };
    if val >= train.len() {
        return Err(DataError::TooFew { val, have: train.len() });
    }
    let (train, validation) = train.split_validation(val);
    Ok((train, validation, test))
}
