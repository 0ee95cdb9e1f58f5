//! Fixed statement sizes for multi-row INSERTs.
//!
//! A multi-VALUES INSERT's SQL text depends on its row count, and sqlx caches prepared
//! statements by text (per connection, up to 100). Batches of every size made SQLite parse a
//! new statement per flush (a fifth of the gateway's instructions with telemetry on) and,
//! cached, filled the cache with statements of up to several MB each: a busy llama-swap host's
//! activity batches of every size from 1 to 1000 grew the gateway's memory with traffic.
//! Cutting every batch into these sizes keeps at most five statement texts per table.

/// Statement sizes (rows) a batch is cut into, largest first.
pub(crate) const REQUEST_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Cuts `n` rows into [`REQUEST_CHUNKS`]-sized pieces, largest first.
pub(crate) fn fixed_chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in REQUEST_CHUNKS {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

/// `rows` cut into [`REQUEST_CHUNKS`]-sized slices, largest first (see the module docs).
pub(crate) fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut at = 0;
    fixed_chunks(rows.len()).into_iter().map(move |n| {
        let chunk = &rows[at..at + n];
        at += n;
        chunk
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_in_order_with_few_sizes() {
        let rows: Vec<usize> = (0..1000).collect();
        for n in 0..=1000 {
            let pieces: Vec<&[usize]> = statement_chunks(&rows[..n]).collect();
            assert_eq!(pieces.concat(), rows[..n].to_vec(), "n={n}");
            assert!(pieces.iter().all(|p| REQUEST_CHUNKS.contains(&p.len())));
        }
    }
}
