//! [`Collective`] over MPI (the `mpi` crate on the OS's Open MPI).

use super::Collective;
use anyhow::{Context, Result, bail};
use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// The world communicator of an `mpirun` job. Dropping it finalises MPI.
pub struct Mpi {
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

impl Mpi {
    /// MPI_Init_thread with `Funneled`: rayon's threads compute, only the main
    /// thread talks to MPI.
    pub fn init() -> Result<Mpi> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Funneled)
            .context("MPI was initialised already in this process")?;
        if level < Threading::Funneled {
            bail!("this MPI library offers thread level {level:?}; training needs Funneled");
        }
        let world = universe.world();
        Ok(Mpi {
            world,
            _universe: universe,
        })
    }

    fn gather<T: Equivalence + Default + Clone>(&self, local: &[T]) -> Result<Vec<T>> {
        let n = mpi::Count::try_from(local.len()).context("a gathered list over 2^31 values")?;
        let mut counts = vec![0 as mpi::Count; self.size()];
        self.world.all_gather_into(&n, &mut counts[..]);
        let mut displs = Vec::with_capacity(counts.len());
        let mut total: mpi::Count = 0;
        for &c in &counts {
            displs.push(total);
            total = total
                .checked_add(c)
                .context("a gathered list over 2^31 values")?;
        }
        let mut out = vec![T::default(); total as usize];
        {
            let mut part = PartitionMut::new(&mut out[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(local, &mut part);
        }
        Ok(out)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn sum_f64(&self, x: f64) -> Result<f64> {
        let mut out = 0.0f64;
        self.world
            .all_reduce_into(&x, &mut out, SystemOperation::sum());
        Ok(out)
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<Vec<u32>> {
        self.gather(local)
    }
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.gather(local)
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
