//! The row-chunk driver: how every sketch parallelises over rows, deterministically.

use faer::{MatMut, Par};
use rayon::prelude::*;

/// Rows per work item when a sketch is applied to many rows.
///
/// The cut into chunks depends only on the number of rows, never on the number of threads, so
/// every row sees the same sequence of floating-point operations whatever [`Par`] says and the
/// results are bitwise identical across thread counts.
pub const CHUNK_ROWS: usize = 256;

/// Calls `f(first_row, chunk)` for consecutive chunks of [`CHUNK_ROWS`] rows of `out`, in
/// parallel on the current rayon pool under `Par::Rayon`, in order under `Par::Seq`.
///
/// `first_row` is the index in `out` of the chunk's first row, so `f` can take the matching rows
/// of its inputs with `subrows(first_row, chunk.nrows())`.
pub fn for_each_row_chunk<T: Send>(
    out: MatMut<'_, T>, par: Par, f: impl Fn(usize, MatMut<'_, T>) + Sync + Send,
) {
    if out.nrows() == 0 {
        return;
    }
    match par {
        Par::Seq => {
            let mut rest = out;
            let mut start = 0;
            while rest.nrows() > 0 {
                let len = rest.nrows().min(CHUNK_ROWS);
                let (head, tail) = rest.split_at_row_mut(len);
                f(start, head);
                start += len;
                rest = tail;
            }
        }
        Par::Rayon(_) => {
            out.par_row_chunks_mut(CHUNK_ROWS)
                .enumerate()
                .for_each(|(i, chunk)| f(i * CHUNK_ROWS, chunk));
        }
    }
}
