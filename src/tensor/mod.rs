//! Tensors: dtypes and their float layouts, the safetensors reader and writer,
//! and borrowed views.

pub mod dtype;
pub mod safetensors;
pub mod synth;

pub use dtype::{DType, FloatLayout, numel};
pub use safetensors::{OwnedTensor, SafeTensors, TensorInfo, TensorView};
