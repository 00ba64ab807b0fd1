//! Shared harness code for the fuzz targets in `fuzz_targets/` (see
//! `docs/fuzzing.md`) and the seed generator in `examples/seeds.rs`.

pub mod media;
pub mod records;
