//! Data-parallel runs over MPI (the feature `mpi`): [`Mpi`] implements the gpt crate's
//! [`Collective`] with rsmpi over the system's MPI, so that `mpirun -np N polysketch train …`
//! trains one model on N processes.
//!
//! Every sum is the chain of [`Collective`]: rank 0 adds its pieces to zeros and sends the
//! running total to rank 1, which adds its pieces and passes it on; the last rank broadcasts
//! the total. The additions happen in the order one process would make them, so 1, 2 or 3
//! ranks give the same numbers, bit for bit. The cost per sum of \\(P\\) values:
//! \\((N - 1)\\) point-to-point messages of \\(4P\\) bytes one after another, then a broadcast of
//! \\(4P\\) bytes (see the book's chapter "Scaling out").

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{Destination, Root, Source};
use polysketch_core::collective::{Collective, chain_add};

/// The world communicator of this process's MPI job, initialised once.
pub struct Mpi {
    // dropped last: finalises MPI
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank(), self.size())
    }
}

impl Mpi {
    /// Initialises MPI (run without `mpirun`, the process is a job of one rank).
    ///
    /// # Errors
    /// [`crate::Error::Config`] if MPI was initialised already.
    pub fn init() -> crate::Result<Self> {
        let universe = mpi::initialize()
            .ok_or_else(|| crate::Error::Config("MPI is already initialised".into()))?;
        Ok(Self { world: universe.world(), _universe: universe })
    }

    /// Ends every rank of the job at once (`MPI_Abort`) after printing `message` with this
    /// rank's number: what one rank's error does, so that no other rank waits forever for it.
    pub fn abort(&self, message: &str) -> ! {
        eprintln!("error (rank {} of {}): {message}", self.rank(), self.size());
        self.world.abort(1)
    }
}

impl Mpi {
    /// The chain of [`Collective`] over `total`'s type: receive the running total from the
    /// previous rank, add this rank's pieces, pass it on; the last rank broadcasts it.
    fn chain<T>(&self, pieces: &[Vec<T>], total: &mut [T]) -> polysketch_core::Result<()>
    where
        T: polysketch_core::Scalar + mpi::datatype::Equivalence,
    {
        let (rank, size) = (self.world.rank(), self.world.size());
        total.fill(T::zero());
        if rank > 0 {
            self.world.process_at_rank(rank - 1).receive_into(total);
        }
        chain_add(total, pieces)?;
        if rank + 1 < size {
            self.world.process_at_rank(rank + 1).send(&*total);
        }
        self.world.process_at_rank(size - 1).broadcast_into(total);
        Ok(())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn chain_sum_f32(&self, pieces: &[Vec<f32>], total: &mut [f32]) -> polysketch_core::Result<()> {
        self.chain(pieces, total)
    }

    fn chain_sum_f64(&self, pieces: &[Vec<f64>], total: &mut [f64]) -> polysketch_core::Result<()> {
        self.chain(pieces, total)
    }
}
