pub mod proto;
pub mod rng;
