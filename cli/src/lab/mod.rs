//! What measures and shows reid rather than runs it: the benchmarks (`reid bench`), the seed's
//! metric-learning experiments (`reid experiment`) and the demo (`reid demo`). The commands that
//! run and talk to a deployment live beside this tree, not in it.

pub mod bench;
pub mod demo;
pub mod experiment;
