//! Partition chunks in flight: how big they are, what they are charged against
//! `--max-memory`, how long they may wait, and the stream that sends a partition as
//! chunks.
//!
//! `--max-memory` includes migration buffers. Every chunk of partition data a node holds
//! on its way to or from a peer holds a [`BufferGuard`] for its bytes, from when it is
//! built (or received) until it is handed to the transport (or applied):
//! - a partition stream's sender: each chunk queued for a slow receiver (at most
//!   [`CHUNKS_IN_FLIGHT`] in the channel, plus one waiting for room);
//! - a pull's receiver: the chunk being applied, released record by record;
//! - a drain's hand-off: the batch being sent, and on the holder the batch being stored.
//!
//! Buffers come out of their own share of the bound and never evict an entry (see
//! `store/memory.rs`). A chunk that does not fit fails its exchange with
//! `RESOURCE_EXHAUSTED`; callers retry a failed exchange and never take it for "no data".
//!
//! Neither side waits forever on the other ([`STREAM_IDLE`]): a stream whose receiver
//! takes no chunk for that long gives back every chunk it queued and ends with
//! `DEADLINE_EXCEEDED`, and a pull that receives nothing for that long fails the same
//! way. So a peer that opens streams and never reads them, or that went half-open in the
//! middle of a move, holds no buffer and stalls nothing for longer than that.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::Stream;
use tonic::Status;

use super::wire::proto;
use crate::store::{BufferGuard, DIGEST_BUCKETS, RecordLimits, Store};

/// Records per streamed chunk, and roughly the bytes of keys and values per chunk.
pub const CHUNK_RECORDS: usize = 256;
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered ahead of a slow receiver: the stream's backpressure bound.
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// How long a stream's sender waits for its receiver to take a chunk, and a pull waits
/// for the next chunk, before the exchange fails. A receiver applies a chunk in a few
/// milliseconds and a sender builds one in less; ten seconds without one is a peer that
/// stopped reading or went away.
pub const STREAM_IDLE: Duration = Duration::from_secs(10);

/// The allocator's per-allocation header and rounding (as in the entry charge).
const ALLOCATION_OVERHEAD: usize = 16;
/// The most protobuf adds to a record's key and value: field tags, length prefixes, the
/// three varints of its version and expiry, the tombstone flag, and its own framing in
/// the repeated field.
const RECORD_FRAMING: usize = 64;
/// What a message carries besides records: the sender, the flags.
const MESSAGE_FRAMING: usize = 4096;
/// Tonic's default decoding limit. The peer limit never goes below it, so a peer still
/// holding records from before a lower `--max-value-bytes` can stream them (the
/// receiver skips them) instead of failing the whole chunk forever.
const TONIC_DEFAULT_MESSAGE: usize = 4 << 20;

/// Bytes a record held in a chunk is charged: the record itself, its key and value, and
/// the allocator's overhead on those two allocations.
pub fn record_charge(record: &proto::Record) -> usize {
    size_of::<proto::Record>() + 2 * ALLOCATION_OVERHEAD + record.key.len() + record.value.len()
}

/// Bytes a chunk of `records` is charged.
pub fn chunk_charge(records: &[proto::Record]) -> usize {
    records.iter().map(record_charge).sum()
}

/// The largest peer message a node sends or accepts: a full chunk, which may end with
/// one record of the largest size (a chunk closes once it reaches [`CHUNK_BYTES`]), or a
/// single record; and never less than tonic's default of 4 MiB.
pub fn max_message_bytes(limits: &RecordLimits) -> usize {
    let largest_record = limits.max_key_bytes + limits.max_value_bytes + RECORD_FRAMING;
    let chunk = CHUNK_BYTES + CHUNK_RECORDS * RECORD_FRAMING + largest_record;
    (chunk + MESSAGE_FRAMING).max(TONIC_DEFAULT_MESSAGE)
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

type Queue = mpsc::Receiver<Result<Charged, Status>>;

/// The chunks of one partition stream, each charged against the sender's bound until
/// tonic takes it to encode (the encoded bytes are transport buffers).
#[derive(Debug)]
pub struct ChunkStream {
    /// The only strong reference: dropping the stream drops the queue, which ends the
    /// sender. The sender holds a weak one, to empty the queue of a receiver that stalled.
    chunks: Arc<Mutex<Queue>>,
    /// A place among the streams the node serves at once, held until the transport drops
    /// the stream: after it ended, or when the receiver resets it or its connection
    /// closes. Not just until the sender is done: a receiver that stops reading (and
    /// granting HTTP/2 flow-control window) keeps the stream, and up to one encoded chunk
    /// with it, in the transport, and the slot is what bounds how many such streams the
    /// node holds. Measured (a limit of 32, 48 MiB of entries on a 64 MiB node, 30
    /// connections never reading): released with the sender, they got 2,990 streams and
    /// the node peaked at 369 MiB of RSS; held with the stream, 433 and 104 MiB.
    _slot: Option<OwnedSemaphorePermit>,
}

impl ChunkStream {
    /// Holds `slot` for as long as the stream lives.
    pub fn holding(mut self, slot: OwnedSemaphorePermit) -> Self {
        self._slot = Some(slot);
        self
    }
}

impl Stream for ChunkStream {
    type Item = Result<proto::Chunk, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Taking the chunk out drops its reservation.
        self.chunks
            .lock()
            .poll_recv(cx)
            .map(|item| item.map(|charged| charged.map(|charged| charged.chunk)))
    }
}

/// Streams `partition` (only `buckets`, when given) from `store` as bounded chunks, built
/// while the receiver keeps up. A chunk that cannot be charged ends the stream with
/// `RESOURCE_EXHAUSTED`; a receiver that goes away ends it too, and one that takes no
/// chunk for [`STREAM_IDLE`] gets `DEADLINE_EXCEEDED`. Either way every queued chunk
/// gives its bytes back.
pub fn stream_partition(
    store: Store,
    partition: u32,
    buckets: Option<[bool; DIGEST_BUCKETS]>,
) -> ChunkStream {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let chunks = Arc::new(Mutex::new(rx));
    let sender = Sender {
        tx,
        queue: Arc::downgrade(&chunks),
        partition,
    };
    tokio::spawn(sender.send_partition(store, buckets));
    ChunkStream {
        chunks,
        _slot: None,
    }
}

/// The sending half of a [`ChunkStream`].
#[derive(Debug)]
struct Sender {
    tx: mpsc::Sender<Result<Charged, Status>>,
    queue: Weak<Mutex<Queue>>,
    partition: u32,
}

impl Sender {
    async fn send_partition(self, store: Store, buckets: Option<[bool; DIGEST_BUCKETS]>) {
        let partition = self.partition;
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
                        tracing::warn!(
                            partition,
                            error = %status.message(),
                            "partition stream refused"
                        );
                        Err(status)
                    }
                };
                let refused = item.is_err();
                if !self.send(item).await || refused {
                    return;
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    }

    /// Queues `item`, waiting while the receiver is behind. False when the stream is
    /// over: the receiver went away, or took nothing for [`STREAM_IDLE`]. Then every
    /// chunk still queued is dropped, giving its bytes back, and the receiver is left an
    /// error in their place, never a short stream that would look complete.
    async fn send(&self, item: Result<Charged, Status>) -> bool {
        match tokio::time::timeout(STREAM_IDLE, self.tx.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_idle) => {
                // The item waiting for room went with the timed-out send.
                if let Some(queue) = self.queue.upgrade() {
                    let mut queue = queue.lock();
                    while queue.try_recv().is_ok() {}
                }
                let stalled = Status::deadline_exceeded(format!(
                    "partition {}: the receiver took no chunk for {STREAM_IDLE:?}",
                    self.partition
                ));
                tracing::warn!(
                    partition = self.partition,
                    "partition stream ended: its receiver stopped reading"
                );
                let _ = self.tx.try_send(Err(stalled));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
