//! Neural-network basics on candle, all differentiable: seeded randomness, named
//! parameters, ops with a backward pass, linear layers, and gradient checking.

pub mod attention;
pub mod fused;
pub mod gathered;
pub mod gemm;
pub mod gradcheck;
pub mod linear;
pub mod ops;
pub mod optim;
pub mod params;
pub mod rng;
pub mod vmath;
