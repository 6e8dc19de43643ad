//! [`Collective`] between threads of one process: N ranks that share memory.
//! It runs the data-parallel algorithm without an MPI installation (the tests
//! use it to check that N ranks compute what one process computes). Sums are
//! taken in rank order, so every rank gets the same bits.

use super::Collective;
use anyhow::{Result, anyhow};
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u32>>>,
}

/// One rank of a [`ranks`] group.
pub struct LocalRank {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

/// `n` connected ranks; give each to its own thread.
pub fn ranks(n: usize) -> Vec<LocalRank> {
    let shared = Arc::new(Shared {
        barrier: Barrier::new(n),
        slots: Mutex::new(vec![Vec::new(); n]),
    });
    (0..n)
        .map(|rank| LocalRank {
            rank,
            size: n,
            shared: shared.clone(),
        })
        .collect()
}

impl LocalRank {
    /// Every rank's words, in rank order.
    fn exchange(&self, words: Vec<u32>) -> Result<Vec<Vec<u32>>> {
        let lock = || {
            self.shared
                .slots
                .lock()
                .map_err(|_| anyhow!("another rank panicked"))
        };
        lock()?[self.rank] = words;
        self.shared.barrier.wait();
        let all = lock()?.clone();
        // Nobody writes the next message before everyone has read this one.
        self.shared.barrier.wait();
        Ok(all)
    }
}

impl Collective for LocalRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let all = self.exchange(buf.iter().map(|x| x.to_bits()).collect())?;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = all.iter().map(|w| f32::from_bits(w[i])).sum();
        }
        Ok(())
    }
    fn sum_f64(&self, x: f64) -> Result<f64> {
        let b = x.to_bits();
        let all = self.exchange(vec![(b >> 32) as u32, b as u32])?;
        Ok(all
            .iter()
            .map(|w| f64::from_bits((u64::from(w[0]) << 32) | u64::from(w[1])))
            .sum())
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<Vec<u32>> {
        Ok(self.exchange(local.to_vec())?.concat())
    }
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(local.iter().map(|x| x.to_bits()).collect())?;
        Ok(all.concat().into_iter().map(f32::from_bits).collect())
    }
    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "threads"
    }
    fn abort(&self, code: i32) -> ! {
        panic!("rank {} aborted the group (code {code})", self.rank)
    }
}
