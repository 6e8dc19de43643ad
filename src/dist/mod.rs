//! Data-parallel training: the collective operations a run needs from the other
//! processes of a job, behind one interface.
//!
//! - [`Single`]: one process (the default; every call is the identity).
//! - [`local`]: ranks as threads of one process (tests; no MPI needed).
//! - `Mpi` (cargo feature `mpi`): the ranks of `mpirun -np N pipeline train …`,
//!   over the OS's Open MPI through the `mpi` crate.
//! - `Nccl` (cargo feature `cuda`): the same operations over NCCL, for ranks that
//!   each drive one GPU. Compile-checked; not run here (no GPU).
//!
//! How the trainer uses them (`train/trainer`): every rank builds the same
//! global batches from the same seeded order, takes its contiguous slice of
//! each, and divides its summed loss by the global batch size. Dense gradients
//! are summed with [`Collective::all_reduce_sum`]; embedding gradients travel as
//! (row, gradient) lists gathered with [`Collective::all_gather_u32`] and
//! [`Collective::all_gather_f32`] and are merged in rank order, so every rank
//! applies the same update to its replica of the tables and N ranks compute what
//! one process computes with the same global batch, up to the order of
//! floating-point sums.

use anyhow::{Result, bail};

pub mod local;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "cuda")]
pub mod nccl;

/// The operations a data-parallel run needs. Every rank must make the same calls
/// in the same order (as with any collective library).
pub trait Collective {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum of `buf` over the ranks, written back on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Sum of one number over the ranks (losses, counts).
    fn sum_f64(&self, x: f64) -> Result<f64>;
    /// Every rank's `local`, concatenated in rank order, on every rank. Lengths
    /// may differ between ranks.
    fn all_gather_u32(&self, local: &[u32]) -> Result<Vec<u32>>;
    /// As [`Collective::all_gather_u32`], for f32.
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// What carries the messages, for logs ("mpi", "nccl", "single").
    fn name(&self) -> &'static str;
    /// End the whole job after an error on this rank: the others may be waiting
    /// in a collective call and would otherwise wait for ever.
    fn abort(&self, code: i32) -> !;
}

/// One process: rank 0 of 1.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, x: f64) -> Result<f64> {
        Ok(x)
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<Vec<u32>> {
        Ok(local.to_vec())
    }
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "single"
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The number of processes the launcher started this one among, from the
/// variables Open MPI (`OMPI_COMM_WORLD_SIZE`), PMIx (`PMIX_SIZE`) or MPICH's
/// Hydra (`PMI_SIZE`) set; 1 when it was started on its own.
pub fn launched_size() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// This process's rank as the launcher announced it (0 without a launcher).
pub fn launched_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// The collective for this process: MPI when an MPI launcher started it with
/// more than one rank (and the build has MPI), else [`Single`].
///
/// With the `cuda` feature and `LLMCTR_COLLECTIVE=nccl`, the ranks talk over
/// NCCL instead: rank r drives GPU `LOCAL_RANK` (or Open MPI's local rank), and
/// `LLMCTR_NCCL_ID` names the file through which rank 0 hands out NCCL's id.
pub fn connect() -> Result<std::rc::Rc<dyn Collective>> {
    let n = launched_size();
    if n == 1 {
        return Ok(std::rc::Rc::new(Single));
    }
    if std::env::var("LLMCTR_COLLECTIVE").is_ok_and(|v| v == "nccl") {
        #[cfg(feature = "cuda")]
        {
            let id = std::env::var_os("LLMCTR_NCCL_ID").ok_or_else(|| {
                anyhow::anyhow!(
                    "LLMCTR_COLLECTIVE=nccl needs LLMCTR_NCCL_ID: a file path all ranks share"
                )
            })?;
            let local = [
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "LOCAL_RANK",
                "MPI_LOCALRANKID",
            ]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
            return Ok(std::rc::Rc::new(nccl::Nccl::init(
                launched_rank(),
                n,
                local,
                std::path::Path::new(&id),
            )?));
        }
        #[cfg(not(feature = "cuda"))]
        bail!("LLMCTR_COLLECTIVE=nccl needs a build with `--features cuda`");
    }
    #[cfg(feature = "mpi")]
    {
        let c = mpi::Mpi::init()?;
        if c.size() != n {
            bail!(
                "the launcher announced {n} ranks but MPI's world has {}",
                c.size()
            );
        }
        Ok(std::rc::Rc::new(c))
    }
    #[cfg(not(feature = "mpi"))]
    bail!(
        "started as one of {n} MPI ranks, but this build has no MPI: build with \
         `cargo build --release --features mpi` (needs Open MPI's headers and libclang; \
         see docs/distributed.md). Without it each rank would train the whole run alone \
         and write the same files."
    )
}

/// Merge gathered (row, gradient) lists: the gradients of a row that several
/// ranks touched are summed in rank order. Rows keep the order of their first
/// appearance, so every rank gets the same list.
pub fn merge_rows(rows: &[u32], grads: &[f32], dim: usize) -> (Vec<u32>, Vec<f32>) {
    debug_assert_eq!(rows.len() * dim, grads.len());
    let mut index = std::collections::HashMap::with_capacity(rows.len());
    let mut out_rows = Vec::with_capacity(rows.len());
    let mut out = Vec::with_capacity(grads.len());
    for (k, &r) in rows.iter().enumerate() {
        let g = &grads[k * dim..(k + 1) * dim];
        match index.get(&r) {
            Some(&i) => {
                let o: &mut [f32] = &mut out[i * dim..(i + 1) * dim];
                for (a, b) in o.iter_mut().zip(g) {
                    *a += b;
                }
            }
            None => {
                index.insert(r, out_rows.len());
                out_rows.push(r);
                out.extend_from_slice(g);
            }
        }
    }
    (out_rows, out)
}

/// The slice of a global batch of `n` rows that `rank` of `size` computes:
/// contiguous, sizes differing by at most one.
pub fn slice_of(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    n * rank / size..n * (rank + 1) / size
}

/// A 64-bit digest of f32 values (their bits), to check that replicas agree.
pub fn digest(values: &[f32], mut h: u64) -> u64 {
    for v in values {
        h ^= u64::from(v.to_bits());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batch_once() {
        for n in [0, 1, 5, 7, 256] {
            for size in 1..5 {
                let mut next = 0;
                for r in 0..size {
                    let s = slice_of(n, r, size);
                    assert_eq!(s.start, next);
                    assert!(s.len() <= n.div_ceil(size));
                    next = s.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn merged_rows_sum_in_rank_order() {
        // Rank 0 touched rows 3 and 1, rank 1 rows 1 and 4 (dim 2).
        let rows = [3, 1, 1, 4];
        let grads = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 5.0, 6.0];
        let (r, g) = merge_rows(&rows, &grads, 2);
        assert_eq!(r, vec![3, 1, 4]);
        assert_eq!(g, vec![1.0, 2.0, 13.0, 24.0, 5.0, 6.0]);
    }
}
