//! Partition chunks in flight: how big they are, what they are charged against
//! `--max-memory`, and the stream that sends a partition as chunks.
//!
//! `--max-memory` includes migration buffers. Every chunk of partition data a node holds
//! on its way to or from a peer holds a [`BufferGuard`] for its bytes, from when it is
//! built (or received) until it is handed to the transport (or applied):
//! - a partition stream's sender: each chunk queued for a slow receiver (at most
//!   [`CHUNKS_IN_FLIGHT`] in the channel, plus one waiting for room);
//! - a pull's receiver: the chunk being applied, released record by record;
//! - a drain's hand-off: the batch being sent, and on the holder the batch being stored.
//!
//! A chunk that does not fit (the store is full and eviction is off or cannot free
//! enough) fails its exchange with `RESOURCE_EXHAUSTED`; callers retry a failed exchange
//! and never take it for "no data".

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::wire::proto;
use crate::store::{BufferGuard, DIGEST_BUCKETS, Store};

/// Records per streamed chunk, and roughly the bytes of keys and values per chunk.
pub const CHUNK_RECORDS: usize = 256;
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered ahead of a slow receiver: the stream's backpressure bound.
pub const CHUNKS_IN_FLIGHT: usize = 2;

/// The allocator's per-allocation header and rounding (as in the entry charge).
const ALLOCATION_OVERHEAD: usize = 16;

/// Bytes a record held in a chunk is charged: the record itself, its key and value, and
/// the allocator's overhead on those two allocations.
pub fn record_charge(record: &proto::Record) -> usize {
    size_of::<proto::Record>() + 2 * ALLOCATION_OVERHEAD + record.key.len() + record.value.len()
}

/// Bytes a chunk of `records` is charged.
pub fn chunk_charge(records: &[proto::Record]) -> usize {
    records.iter().map(record_charge).sum()
}

/// Reserves `charge` bytes for a chunk (see [`chunk_charge`]), or says why not as
/// `RESOURCE_EXHAUSTED`. `what` names the chunk for the error.
pub fn reserve_chunk(
    store: &Store,
    charge: usize,
    what: impl FnOnce() -> String,
) -> Result<BufferGuard, Status> {
    store.reserve_buffer(charge).map_err(|err| {
        Status::resource_exhausted(format!(
            "no room under --max-memory for a {charge}-byte chunk of {}: {err}",
            what()
        ))
    })
}

/// A chunk and the reservation for its bytes.
#[derive(Debug)]
struct Charged {
    chunk: proto::Chunk,
    _reserved: BufferGuard,
}

/// The chunks of one partition stream, each charged against the sender's bound until
/// tonic takes it to encode (the encoded bytes are transport buffers).
#[derive(Debug)]
pub struct ChunkStream {
    chunks: mpsc::Receiver<Result<Charged, Status>>,
}

impl Stream for ChunkStream {
    type Item = Result<proto::Chunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Taking the chunk out drops its reservation.
        self.chunks
            .poll_recv(cx)
            .map(|item| item.map(|charged| charged.map(|charged| charged.chunk)))
    }
}

/// Streams `partition` (only `buckets`, when given) from `store` as bounded chunks, built
/// while the receiver keeps up. A chunk that cannot be charged ends the stream with
/// `RESOURCE_EXHAUSTED`; a receiver that goes away ends it too, and every queued chunk
/// gives its bytes back.
pub fn stream_partition(
    store: Store,
    partition: u32,
    buckets: Option<[bool; DIGEST_BUCKETS]>,
) -> ChunkStream {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        let mut cursor = None;
        loop {
            let (records, next) = store.partition_chunk(
                partition,
                buckets.as_ref(),
                cursor,
                CHUNK_RECORDS,
                CHUNK_BYTES,
            );
            if !records.is_empty() {
                let records: Vec<proto::Record> =
                    records.into_iter().map(proto::Record::from).collect();
                let charged = reserve_chunk(&store, chunk_charge(&records), || {
                    format!("partition {partition} for a stream")
                });
                let item = match charged {
                    Ok(reserved) => Ok(Charged {
                        chunk: proto::Chunk { records },
                        _reserved: reserved,
                    }),
                    Err(status) => {
                        // The receiver gets the error and retries later; never a short
                        // stream that would look complete.
                        drop(records);
                        tracing::warn!(
                            partition,
                            error = %status.message(),
                            "partition stream refused"
                        );
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                // Waits while the receiver is behind; stops if it went away.
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    });
    ChunkStream { chunks: rx }
}

#[cfg(test)]
mod tests;
