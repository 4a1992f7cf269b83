//! Messages between the host and the init inside a box, over the socket the init inherits.
//!
//! Each frame is a little-endian `u32` length followed by a `postcard` body. Binary payloads
//! (program output, file contents) travel as raw bytes, so nothing needs to be UTF-8. The host
//! side reads frames with tokio, the init with blocking std I/O; both share these types.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::limits::{BoxLimits, RunLimits};

/// Largest frame either side accepts: program output and file contents are capped well below it.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Largest piece of a file the init sends in one [`InitMsg::FileChunk`]: all it ever holds of a
/// file it reads, so that a box whose memory is full of files can still be answered.
pub const FILE_CHUNK: usize = 64 * 1024;

/// Most input a run kept open for stdin holds that its program has not read yet: a
/// [`HostMsg::Stdin`] that would take it past this is refused, so a program that never reads its
/// stdin cannot make the init buffer without limit.
pub const MAX_PENDING_STDIN: usize = 4 * 1024 * 1024;

/// Most of a run's stdin that goes in its [`RunRequest`]; the rest follows in
/// [`HostMsg::StdinFeed`] pieces of at most this size, each sent once the one before was taken.
/// So the init, which lives inside the box's memory limit, never holds more of a stdin than
/// this plus [`MAX_PENDING_STDIN`], however large the stdin is.
pub const STDIN_PIECE: usize = 1024 * 1024;

/// A read-only bind mount of a host path into the box.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bind {
    /// The host path.
    pub source: PathBuf,
    /// Where the box sees it: a neutral path for host-specific places (a toolchain under
    /// `/root`, the compile cache), so that paths in the box name nothing of the host.
    pub target: PathBuf,
}

/// What the host tells a new box before it sets itself up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxSetup {
    /// The host ids the box's ids map to.
    pub ids: crate::ids::IdMap,
    pub limits: BoxLimits,
    /// Read-only binds besides the base system (toolchain directories and the like).
    pub binds: Vec<Bind>,
    /// A directory on the host where the box mounts its new root (empty, shared by all boxes).
    pub root_mountpoint: PathBuf,
    /// Apply rlimits for memory and processes because no cgroup holds the box.
    pub degraded: bool,
    /// The box's run and worker groups, which the init ends runs with (`None` when degraded).
    pub groups: Option<RunGroupPaths>,
}

/// How a box's run and worker groups are killed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKill {
    /// cgroup v2: write `1` to `cgroup.kill`.
    V2Kill,
    /// cgroup v1 with the freezer: freeze, signal every member, thaw.
    V1Freezer,
    /// cgroup v1 without the freezer: signal every member until none is left.
    V1Signal,
}

/// Host paths of the two child groups of a box's cgroup: `run` holds every process of the current
/// run and is killed whole at its end; `workers` holds the warm workers and whatever they fork.
/// The setup process opens their files as host root and the init inherits the descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunGroupPaths {
    pub run: PathBuf,
    pub workers: PathBuf,
    pub kill: GroupKill,
}

/// Requests from the host to the init.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostMsg {
    Setup(BoxSetup),
    Run(Box<RunRequest>),
    WriteFile(WriteFile),
    ReadFile {
        root: FileRoot,
        path: String,
        max_bytes: u64,
    },
    /// Append to a file (created when missing).
    AppendFile(WriteFile),
    CreateDir {
        root: FileRoot,
        path: String,
        recursive: bool,
    },
    /// Remove a file, a symlink, or (with `recursive`, or when empty) a directory.
    Remove {
        root: FileRoot,
        path: String,
        recursive: bool,
    },
    /// Copy a regular file.
    Copy {
        root: FileRoot,
        source: String,
        destination: String,
        overwrite: bool,
    },
    /// List a directory (`path` empty or `.` for the root), never following symlinks.
    List {
        root: FileRoot,
        path: String,
        recursive: bool,
        max_depth: u32,
        max_entries: u32,
    },
    /// Start the warm worker for this spec now, if it is not running, so the first run that
    /// needs it finds it ready.
    StartWorker {
        spec: WarmSpec,
        /// Answer only once the worker is ready to take a run (or after a few seconds).
        wait_ready: bool,
    },
    /// Stop every warm worker whose key is not in `keys` (a box given to one language keeps
    /// only that language's workers).
    KeepWorkers {
        keys: Vec<String>,
    },
    /// Start the kernel of context `id` (a long-lived interpreter that runs the context's
    /// cells), ending the one it had first when there is one: answered `Done` once the kernel is
    /// ready, or `Error`.
    StartContext {
        id: String,
        spec: KernelSpec,
    },
    /// End context `id`'s kernel and everything it started, and forget the context: answered
    /// `Removed(true)` when it was there.
    CloseContext {
        id: String,
    },
    /// Stop the run in progress (sent only while a run goes on).
    Cancel,
    /// More input for the stdin of the run in progress, one started with
    /// [`RunRequest::stdin_open`]; answered during the run by one [`InitMsg::StdinTaken`].
    Stdin(Vec<u8>),
    /// Like [`HostMsg::Stdin`], but taken when there is room instead of refused: the answer
    /// ([`InitMsg::StdinTaken`]) comes once the program has read enough of what it was given
    /// for this piece to fit under [`MAX_PENDING_STDIN`], or with a refusal when the program
    /// closed its stdin or the run ended first. The host sends one at a time (a second one before
    /// the first is answered is refused); it is how the rest of a large stdin is fed.
    StdinFeed(Vec<u8>),
    /// Close the stdin of the run in progress once what it was given is written; answered
    /// during the run by one [`InitMsg::StdinTaken`].
    CloseStdin,
    Shutdown,
}

/// Where a file operation's relative path starts. Paths never leave that directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRoot {
    Workspace,
    Tmp,
}

impl FileRoot {
    pub fn dir(self) -> &'static str {
        match self {
            FileRoot::Workspace => "/workspace",
            FileRoot::Tmp => "/tmp",
        }
    }
}

/// Write a file inside the box, creating parent directories.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteFile {
    pub root: FileRoot,
    pub path: String,
    pub data: Vec<u8>,
    pub executable: bool,
}

/// What kind of thing a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the operation's root directory (`/workspace` or `/tmp`).
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub modified: i64,
    /// Permission bits.
    pub mode: u32,
}

/// Start a process tree in the box and wait for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub argv: Vec<String>,
    /// The whole environment of the program (nothing of the host's leaks in).
    pub env: Vec<(String, String)>,
    /// Working directory inside the box.
    pub cwd: String,
    pub stdin: Vec<u8>,
    /// Keep the program's stdin open after `stdin` is written, for [`HostMsg::Stdin`] pieces,
    /// until [`HostMsg::CloseStdin`] or the run's end; `false` closes it once `stdin` is written.
    pub stdin_open: bool,
    /// Bytes offered on fd 3 (the snippet ABI's input); `None` leaves fd 3 closed.
    pub fd3_input: Option<Vec<u8>>,
    /// Capture fd 4 (the snippet ABI's result).
    pub capture_fd4: bool,
    pub limits: RunLimits,
    /// Send [`InitMsg::Output`] frames while the run goes on.
    pub stream: bool,
    /// Run in this warm worker instead of starting `argv` afresh, when the worker works.
    pub warm: Option<WarmSpec>,
    /// Files written (as the sandbox user) before the program starts.
    pub files: Vec<WriteFile>,
    /// A directory removed (recursively) once the run has ended.
    pub cleanup: Option<(FileRoot, String)>,
    /// Run as a cell of this context (see [`HostMsg::StartContext`]): its kernel runs the code
    /// offered on fd 3 and writes the cell's result to fd 4; `argv` and `warm` are not used.
    pub cell: Option<String>,
}

/// How to start a context's kernel: a program that serves cells on fd 3 (the protocol is in
/// the init's `kernels` module and in the kernels' own sources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSpec {
    pub argv: Vec<String>,
    /// The kernel's whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory inside the box.
    pub cwd: String,
    /// The limits the kernel runs under (its rlimits; its CPU time is not limited, each cell
    /// has a wall-clock deadline instead).
    pub limits: RunLimits,
}

/// What a cell's report says about its context's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellReport {
    /// How many times the context's kernel has been started: 1 for its first kernel, and one
    /// more for each restart (asked for, or after the kernel was lost).
    pub generation: u64,
    /// The context's state from before the cell is gone: its kernel was lost (killed by a
    /// limit, crashed, or ended by a sweep of the box) and was started afresh for this cell, or
    /// it was lost during this cell.
    pub state_lost: bool,
}

/// A pre-started worker that runs programs for one language (see the init's `warm` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmSpec {
    /// Workers are reused for requests with the same key.
    pub key: String,
    /// How to start the worker: it serves requests on fd 3.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the main process of a run ended, as the init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The init could not start the process at all.
    NotStarted,
}

/// The init's report of a finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub fd4: Option<Vec<u8>>,
    pub truncated: bool,
    pub wall_timeout: bool,
    pub output_limit: bool,
    pub wall_nanos: u64,
    pub cpu_nanos: u64,
    /// Largest resident set of any process of the run (from `getrusage`).
    pub max_rss_bytes: u64,
    /// Why the process could not be started, with [`Exit::NotStarted`].
    pub error: Option<String>,
    /// For a cell ([`RunRequest::cell`]): its kernel's generation and whether state was lost.
    pub cell: Option<CellReport>,
}

/// Messages from the init (and, once, from the setup process) to the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InitMsg {
    /// Host pid of the box's init, sent by the setup process right after it is cloned.
    Spawned {
        pid: i32,
    },
    /// The box is set up and takes requests.
    Ready,
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    Finished(RunReport),
    Done,
    /// A piece of the file a `ReadFile` asked for, at most [`FILE_CHUNK`] bytes: the pieces come
    /// in order and `Done` ends them (an `Error` instead drops those already sent).
    FileChunk(Vec<u8>),
    /// Result of `Remove`: whether something was there to remove.
    Removed(bool),
    /// Result of `Copy`: bytes copied.
    Copied(u64),
    /// Result of `List`; `truncated` when `max_entries` cut it short.
    Entries {
        entries: Vec<Entry>,
        truncated: bool,
    },
    /// The answer, during a run, to a [`HostMsg::Stdin`], [`HostMsg::StdinFeed`] or
    /// [`HostMsg::CloseStdin`]: `None` when taken, or why it was refused. The same request after the run is answered by `Error`.
    StdinTaken(Option<String>),
    /// A request failed; the box is still usable.
    Error(String),
    /// Setup failed; the box is gone.
    SetupFailed(String),
}

fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn check_len(len: u32) -> io::Result<usize> {
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok(len)
}

/// Writes one frame (blocking).
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)
}

/// Writes an [`InitMsg::FileChunk`] frame of `data` (blocking) without copying it into a new
/// buffer: the init sends file pieces from the one buffer it reads them into, allocating nothing.
pub fn send_file_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    // postcard writes the variant, then the byte string's length as a varint, then its bytes: the
    // encoding of an empty piece is the variant followed by a zero length.
    let empty = postcard::to_stdvec(&InitMsg::FileChunk(Vec::new())).map_err(io::Error::other)?;
    let variant = empty
        .strip_suffix(&[0])
        .ok_or_else(|| io::Error::other("unexpected encoding"))?;
    let mut header = Vec::with_capacity(4 + variant.len() + 10);
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(variant);
    let mut n = data.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            header.push(byte);
            break;
        }
        header.push(byte | 0x80);
    }
    let len = u32::try_from(header.len() - 4 + data.len())
        .map_err(|_| io::Error::other("frame too large"))?;
    header[..4].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    w.write_all(data)
}

/// Reads one frame (blocking). `Ok(None)` at a clean end of stream.
pub fn recv<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; check_len(u32::from_le_bytes(len))?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// Writes one frame (async).
pub async fn send_async<T: Serialize>(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    msg: &T,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&encode(msg)?).await
}

/// Reads one frame (async). `Ok(None)` at a clean end of stream.
pub async fn recv_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; check_len(u32::from_le_bytes(len))?];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_binary_payloads() {
        let msg = InitMsg::Output {
            stream: Stream::Stderr,
            data: vec![0, 0xff, 0xfe, b'\n'],
        };
        let mut buf = Vec::new();
        send(&mut buf, &msg).unwrap();
        let back: InitMsg = recv(&mut buf.as_slice()).unwrap().unwrap();
        match back {
            InitMsg::Output { stream, data } => {
                assert_eq!(stream, Stream::Stderr);
                assert_eq!(data, vec![0, 0xff, 0xfe, b'\n']);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(recv::<InitMsg>(&mut [].as_slice()).unwrap().is_none());
    }

    #[test]
    fn file_chunks_decode_as_the_message() {
        for size in [0, 1, 127, 128, 300, FILE_CHUNK] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut buf = Vec::new();
            send_file_chunk(&mut buf, &data).unwrap();
            let mut expected = Vec::new();
            send(&mut expected, &InitMsg::FileChunk(data.clone())).unwrap();
            assert_eq!(buf, expected, "{size} bytes");
        }
    }

    #[test]
    fn oversized_length_is_refused() {
        let bytes = u32::MAX.to_le_bytes();
        assert!(recv::<InitMsg>(&mut bytes.as_slice()).is_err());
    }
}
