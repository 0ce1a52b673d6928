//! The compact training runtime: the surrogate CNN of the loss search, trained with a loss
//! kernel given through [`train::LossFn`]. It knows nothing of the loss language.
//!
//! Data flow: `data` (Fashion-MNIST IDX, CIFAR binary) -> `augment` (base, cutout, mixup,
//! RandAug, all) -> `model` (ResNet9v2 from `layers`, which compute through a `device`: `cpu`,
//! or `gpu` (wgpu) and `cuda` with the `kernels` of kernels/train.rs) -> the loss kernel ->
//! `optim`.

pub mod augment;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod device;
pub mod gpu;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod optim;
mod pool;
pub mod profile;
pub mod replay;
pub mod rng;
pub mod stacked;
pub mod train;
