//! [`Collective`] over NCCL (cudarc's bindings), for ranks that each own a GPU.
//!
//! The trainer keeps its tensors on the CPU, so every call here copies the host
//! buffer to the rank's GPU, runs the NCCL collective on the device's default
//! stream and copies the result back. Ranks find each other through NCCL's
//! unique id, which rank 0 writes to a file every rank can read
//! (`LLMCTR_NCCL_ID`, on a shared folder). Compile-checked only: no GPU was lent
//! to the session that wrote it (see docs/distributed.md).

use super::Collective;
use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
}

fn nccl_err(e: cudarc::nccl::result::NcclError) -> anyhow::Error {
    anyhow!("NCCL: {e:?}")
}

impl Nccl {
    /// Rank `rank` of `size` on GPU `device`. Rank 0 writes NCCL's unique id to
    /// `id_file`; the others wait for it (up to five minutes).
    pub fn init(rank: usize, size: usize, device: usize, id_file: &Path) -> Result<Nccl> {
        let ctx = CudaContext::new(device).with_context(|| format!("CUDA device {device}"))?;
        let stream = ctx.default_stream();
        let id = if rank == 0 {
            let id = Id::new().map_err(nccl_err)?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            crate::fsutil::write_atomic(id_file, &bytes)?;
            id
        } else {
            let start = Instant::now();
            let bytes = loop {
                match std::fs::read(id_file) {
                    Ok(b) if b.len() == 128 => break b,
                    _ if start.elapsed() > Duration::from_secs(300) => bail!(
                        "rank {rank}: no NCCL id in {} after 5 minutes (rank 0 writes it)",
                        id_file.display()
                    ),
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            let mut internal = [0 as std::ffi::c_char; 128];
            for (d, s) in internal.iter_mut().zip(&bytes) {
                *d = *s as std::ffi::c_char;
            }
            Id::uninit(internal)
        };
        let comm = Comm::from_rank(stream.clone(), rank, size, id).map_err(nccl_err)?;
        Ok(Nccl { comm, stream })
    }

    /// Every rank's `local` (equal lengths), in rank order.
    fn gather_equal<T>(&self, local: &[T]) -> Result<Vec<T>>
    where
        T: cudarc::driver::DeviceRepr
            + cudarc::driver::ValidAsZeroBits
            + cudarc::nccl::safe::NcclType
            + Copy,
    {
        let send = self.stream.clone_htod(local)?;
        let mut recv = self.stream.alloc_zeros::<T>(local.len() * self.size())?;
        self.comm.all_gather(&send, &mut recv).map_err(nccl_err)?;
        Ok(self.stream.clone_dtoh(&recv)?)
    }

    /// Every rank's `local`, lengths free: counts first, then the lists padded
    /// to the longest (NCCL's all-gather takes equal counts).
    fn gather<T>(&self, local: &[T]) -> Result<Vec<T>>
    where
        T: cudarc::driver::DeviceRepr
            + cudarc::driver::ValidAsZeroBits
            + cudarc::nccl::safe::NcclType
            + Copy
            + Default,
    {
        let counts = self.gather_equal(&[u64::try_from(local.len())?])?;
        let longest = counts.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = local.to_vec();
        padded.resize(longest, T::default());
        let all = self.gather_equal(&padded)?;
        Ok(counts
            .iter()
            .enumerate()
            .flat_map(|(r, &c)| all[r * longest..r * longest + c as usize].iter().copied())
            .collect())
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let mut dev = self.stream.clone_htod(&*buf)?;
        self.comm
            .all_reduce_in_place(&mut dev, &ReduceOp::Sum)
            .map_err(nccl_err)?;
        self.stream.memcpy_dtoh(&dev, buf)?;
        self.stream.synchronize()?;
        Ok(())
    }
    fn sum_f64(&self, x: f64) -> Result<f64> {
        let mut dev = self.stream.clone_htod(&[x])?;
        self.comm
            .all_reduce_in_place(&mut dev, &ReduceOp::Sum)
            .map_err(nccl_err)?;
        Ok(self.stream.clone_dtoh(&dev)?[0])
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<Vec<u32>> {
        self.gather(local)
    }
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.gather(local)
    }
    fn barrier(&self) -> Result<()> {
        self.sum_f64(0.0).map(|_| ())
    }
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
