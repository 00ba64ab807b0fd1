//! placeholder (docs written below)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod error;
pub mod frame;
pub mod identity;
pub mod keys;
mod secret;
