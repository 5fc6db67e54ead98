//! How the processes of a data-parallel job combine their numbers. One process is
//! [`SingleProcess`]; the `polysketch` program's feature `mpi` provides one over MPI.
//!
//! Every sum is a **chain**: `((0 + x_0) + x_1) + …` over the pieces of every rank, ranks in
//! order and each rank's pieces in order, so the rounding is that of one process adding the
//! pieces in a loop, however many ranks share them. (A tree or ring reduction, as
//! `MPI_Allreduce` does, associates differently for different rank counts.)

use core::ops::Range;

use crate::{Error, Result, Scalar};

/// The ranks of a job and their fixed-order sums (see the [module documentation](self)).
pub trait Collective {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// `total = ((0 + p_0) + p_1) + …` elementwise over the pieces of all ranks (this rank's
    /// are `pieces`, each as long as `total`); every rank receives the total.
    ///
    /// # Errors
    /// [`Error::Collective`]: a piece of another length, a failed exchange.
    fn chain_sum_f32(&self, pieces: &[Vec<f32>], total: &mut [f32]) -> Result<()>;
    /// [`chain_sum_f32`](Self::chain_sum_f32) in `f64`.
    ///
    /// # Errors
    /// As [`chain_sum_f32`](Self::chain_sum_f32).
    fn chain_sum_f64(&self, pieces: &[Vec<f64>], total: &mut [f64]) -> Result<()>;
    /// The chain over single values: `((0 + v_0) + v_1) + …`.
    ///
    /// # Errors
    /// As [`chain_sum_f32`](Self::chain_sum_f32).
    fn chain_values(&self, values: &[f64]) -> Result<f64> {
        let pieces: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
        let mut total = [0.0];
        self.chain_sum_f64(&pieces, &mut total)?;
        Ok(total[0])
    }
}

/// `acc += p` for each piece in order: the part of a chain one rank adds.
///
/// # Errors
/// [`Error::Collective`] if a piece's length differs from `acc`'s.
pub fn chain_add<T: Scalar>(acc: &mut [T], pieces: &[Vec<T>]) -> Result<()> {
    if let Some(p) = pieces.iter().find(|p| p.len() != acc.len()) {
        return Err(Error::Collective {
            op: "chain_add",
            reason: format!("a piece of {} values for a total of {}", p.len(), acc.len()),
        });
    }
    for p in pieces {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += *b);
    }
    Ok(())
}

/// The consecutive share `len·rank/size .. len·(rank+1)/size` of `len` items (rows, batches)
/// that rank `rank` of `size` takes: the shares cover `0..len` in rank order.
pub fn share(len: usize, rank: usize, size: usize) -> Range<usize> {
    let at = |r: usize| ((len as u128 * r as u128) / size.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}

/// One process: the chain is a loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn chain_sum_f32(&self, pieces: &[Vec<f32>], total: &mut [f32]) -> Result<()> {
        total.fill(0.0);
        chain_add(total, pieces)
    }
    fn chain_sum_f64(&self, pieces: &[Vec<f64>], total: &mut [f64]) -> Result<()> {
        total.fill(0.0);
        chain_add(total, pieces)
    }
}
