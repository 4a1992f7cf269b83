//! `session.execute` with its progress streamed as `execution.*` events: the one event stream,
//! used by the server (as JSON-RPC notifications) and by the client's embedded mode alike, so
//! both announce, chunk and decode output exactly the same.
//!
//! The order is fixed: `execution.started` first, before the session is even looked up; then
//! `execution.output` events in order (`seq` from 0 across both streams, consecutive chunks of
//! one stream merged up to [`MAX_NOTIFICATION_BYTES`], a UTF-8 character split across chunks
//! kept whole); `execution.completed` last, also when the command failed (`success: false`).

use std::future::Future;
use std::time::Instant;

use codebeaker_protocol::commands::Command;
use codebeaker_protocol::jsonrpc::Id;
use codebeaker_protocol::methods::{
    ExecutionCompleted, ExecutionEvent, ExecutionOutput, ExecutionStarted, OutputStream,
};
use codebeaker_sandbox::{OutputChunk, Stream};
use tokio::sync::{mpsc, oneshot};

use crate::{Caller, CommandOutcome, Engine, EngineError};

/// Streamed output goes out in events of at most about this many bytes.
pub const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

/// Which request an event belongs to.
pub(crate) struct Target {
    pub request_id: Option<Id>,
    pub session_id: String,
}

impl Engine {
    /// Runs `command` as [`Engine::execute_command`] does, announcing its progress through
    /// `emit` in the order the [module doc](self) gives. `request_id` is the id the events
    /// carry (the JSON-RPC id of the `session.execute` request).
    ///
    /// The command and the forwarding of its output run side by side, so a slow `emit` (a
    /// client slow to read its notifications) never stops the command from being driven.
    pub async fn execute_command_streamed<E, F>(
        &self,
        caller: &Caller,
        session_id: &str,
        command: Command,
        request_id: Option<Id>,
        emit: E,
    ) -> Result<CommandOutcome, EngineError>
    where
        E: Fn(ExecutionEvent) -> F,
        F: Future<Output = ()>,
    {
        let started = Instant::now();
        let target = Target {
            request_id,
            session_id: session_id.to_string(),
        };
        emit(ExecutionEvent::Started(ExecutionStarted {
            request_id: target.request_id.clone(),
            session_id: target.session_id.clone(),
            command: command.command_type().as_str().to_string(),
        }))
        .await;
        let result = forward_output(&target, &emit, |tx| {
            self.execute_command(caller, session_id, command, Some(tx))
        })
        .await;
        let (success, status, duration) = match &result {
            Ok(outcome) => (
                outcome.success,
                outcome.run().map(|r| r.status),
                outcome.duration,
            ),
            Err(_) => (false, None, started.elapsed()),
        };
        emit(ExecutionEvent::Completed(ExecutionCompleted {
            request_id: target.request_id,
            session_id: target.session_id,
            success,
            status,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }))
        .await;
        result
    }
}

/// Runs what `run` starts with the output sender it is given, and meanwhile turns the chunks it
/// sends into `execution.output` events through `emit`, in order; returns once both are done.
///
/// The run and the forwarding go side by side, so a slow `emit` (a client slow to read its
/// notifications) never stops the run from being driven. The end of the run, not the end of
/// the channel, ends the stream: the sender may outlive the run.
pub(crate) async fn forward_output<T, R, E, F>(
    target: &Target,
    emit: &E,
    run: impl FnOnce(mpsc::UnboundedSender<OutputChunk>) -> R,
) -> T
where
    R: Future<Output = T>,
    E: Fn(ExecutionEvent) -> F,
    F: Future<Output = ()>,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done, mut finished) = oneshot::channel::<()>();
    let running = async {
        let result = run(tx).await;
        let _ = done.send(());
        result
    };
    let forwarding = async {
        let mut output = OutputForwarder::default();
        loop {
            tokio::select! {
                biased;
                Some(chunk) = rx.recv() => {
                    let mut chunks = vec![chunk];
                    while let Ok(more) = rx.try_recv() {
                        chunks.push(more);
                    }
                    for event in output.push(target, chunks) {
                        emit(event).await;
                    }
                }
                _ = &mut finished => break,
            }
        }
        let mut rest = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            rest.push(chunk);
        }
        let mut tail = output.push(target, rest);
        tail.extend(output.finish(target));
        for event in tail {
            emit(event).await;
        }
    };
    let (result, ()) = tokio::join!(running, forwarding);
    result
}

/// Turns output chunks into `execution.output` events: consecutive chunks of one stream are
/// merged, UTF-8 sequences split across chunks are kept whole, and `seq` counts from 0 across
/// both streams.
#[derive(Default)]
struct OutputForwarder {
    seq: u64,
    stdout: Utf8Carry,
    stderr: Utf8Carry,
}

impl OutputForwarder {
    fn push(&mut self, target: &Target, chunks: Vec<OutputChunk>) -> Vec<ExecutionEvent> {
        let mut events = Vec::new();
        let mut current: Option<(Stream, String)> = None;
        for chunk in chunks {
            let text = match chunk.stream {
                Stream::Stdout => self.stdout.push(&chunk.data),
                Stream::Stderr => self.stderr.push(&chunk.data),
            };
            if text.is_empty() {
                continue;
            }
            match &mut current {
                Some((stream, buffer))
                    if *stream == chunk.stream
                        && buffer.len() + text.len() <= MAX_NOTIFICATION_BYTES =>
                {
                    buffer.push_str(&text);
                }
                _ => {
                    if let Some((stream, data)) = current.take() {
                        events.push(self.event(target, stream, data));
                    }
                    current = Some((chunk.stream, text));
                }
            }
        }
        if let Some((stream, data)) = current {
            events.push(self.event(target, stream, data));
        }
        events
    }

    fn finish(&mut self, target: &Target) -> Vec<ExecutionEvent> {
        let mut events = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let text = match stream {
                Stream::Stdout => self.stdout.finish(),
                Stream::Stderr => self.stderr.finish(),
            };
            if !text.is_empty() {
                events.push(self.event(target, stream, text));
            }
        }
        events
    }

    fn event(&mut self, target: &Target, stream: Stream, data: String) -> ExecutionEvent {
        let seq = self.seq;
        self.seq += 1;
        ExecutionEvent::Output(ExecutionOutput {
            request_id: target.request_id.clone(),
            session_id: target.session_id.clone(),
            stream: match stream {
                Stream::Stdout => OutputStream::Stdout,
                Stream::Stderr => OutputStream::Stderr,
            },
            data,
            seq,
        })
    }
}

/// Decodes a byte stream as UTF-8 chunk by chunk, holding back a character split across chunks
/// until its remaining bytes arrive. Bytes that are not UTF-8 become U+FFFD.
///
/// The one decoder of streamed output: every door that sends a run's output as text as it comes
/// keeps one per stream.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// The text of `bytes` after what was held back, holding back a character cut off at
    /// their end.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let cut = incomplete_tail_start(&self.pending);
        let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
        self.pending.drain(..cut);
        text
    }

    /// What is still held back, at the end of the stream (a cut-off character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Where a UTF-8 sequence that is cut off at the end of `bytes` starts (`bytes.len()` when the
/// end is not inside a sequence).
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(3) {
        let byte = bytes[n - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: the sequence started further back
        }
        let needed = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let text = "héllo → wörld 🎉";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut carry = Utf8Carry::default();
            let mut out = carry.push(&bytes[..split]);
            out.push_str(&carry.push(&bytes[split..]));
            out.push_str(&carry.finish());
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        let mut out = carry.push(b"a\xffb\xe2\x82");
        out.push_str(&carry.finish());
        assert_eq!(out, "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn chunks_of_one_stream_merge_and_seq_counts_across_streams() {
        let target = Target {
            request_id: Some(Id::from(7u64)),
            session_id: "s".into(),
        };
        let chunk = |stream, data: &[u8]| OutputChunk {
            stream,
            data: data.to_vec(),
        };
        let mut forwarder = OutputForwarder::default();
        let events = forwarder.push(
            &target,
            vec![
                chunk(Stream::Stdout, b"a"),
                chunk(Stream::Stdout, b"b\xc3"),
                chunk(Stream::Stderr, b"e"),
            ],
        );
        let mut tail = forwarder.push(&target, vec![chunk(Stream::Stdout, b"\xa9")]);
        tail.extend(forwarder.finish(&target));
        let seen: Vec<(u64, OutputStream, String)> = events
            .into_iter()
            .chain(tail)
            .map(|e| match e {
                ExecutionEvent::Output(o) => (o.seq, o.stream, o.data),
                other => panic!("not an output event: {other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, OutputStream::Stdout, "ab".to_string()),
                (1, OutputStream::Stderr, "e".to_string()),
                (2, OutputStream::Stdout, "é".to_string()),
            ]
        );
    }
}
