//! A training step recorded once and replayed as one graph: what lets the CUDA device launch
//! a whole step of K models with one call (a CUDA graph) instead of one per kernel.
//!
//! The training loop marks each step ([`crate::device::Device::begin_step`], then
//! [`crate::device::Device::flush`]). A step's host code runs every time (it draws the batch,
//! the augmentations and the dropout masks, and uploads them); only its launches are replaced.
//! The second step is recorded (the first allocates what later steps keep): it runs as usual
//! while the [`Recorder`] notes each launch (the kernel and its raw arguments), each buffer it
//! allocates and each upload, and keeps those buffers alive. From the next step on, the
//! recorder hands the same buffers out again in the same order, writes each upload into its
//! recorded buffer, and only compares each launch with the recording; at the step's end the
//! recorded launches run as one graph. A step that launches anything else (another buffer,
//! another parameter) runs the launches it skipped, goes on as usual, and the next step is
//! recorded afresh; so a replay is exactly the launches the host asked for, and a step the
//! recording does not fit costs speed, never correctness.
//!
//! Uploads are written when the host makes them, before the step's graph runs: a recording in
//! which a launch reads memory that a later upload of the same step reuses is not replayed.

use std::ops::Range;

/// What the launcher replays: its launches, buffers, and graphs.
pub trait Replay: Sized {
    type Mem: Clone;
    type Words: Clone;
    /// One launch with its raw arguments, comparable with another.
    type Op: PartialEq;
    type Graph;
    /// Runs `op` now.
    fn run(&self, op: &Self::Op);
    /// Zeroes the first `floats` of `mem` now.
    fn zero(&self, mem: &Self::Mem, floats: usize);
    /// The steps' launches as one graph, or why they cannot be one.
    fn build(&self, nodes: &[Node<'_, Self>]) -> Result<Self::Graph, String>;
    /// Runs `graph` (in order after the work before it), or says why it could not.
    fn replay(&self, graph: &Self::Graph) -> Result<(), String>;
    /// The device addresses `op` passes.
    fn pointers(op: &Self::Op) -> Vec<u64>;
    /// The device addresses a buffer spans.
    fn span(buf: &Held<Self>) -> Range<u64>;
}

/// A buffer of a recorded step.
pub enum Held<R: Replay> {
    F(R::Mem),
    W(R::Words),
}

impl<R: Replay> Clone for Held<R> {
    fn clone(&self) -> Self {
        match self {
            Held::F(m) => Held::F(m.clone()),
            Held::W(w) => Held::W(w.clone()),
        }
    }
}

/// How a recorded step got a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Zeros: zeroed again at each replay, where the step allocated it.
    Zeros,
    /// Contents undefined (written in full before they are read).
    Scratch,
    /// An upload of floats, written again at each replay.
    Floats,
    /// An upload of u32 words, written again at each replay.
    Words,
}

/// A graph's node, in order: a launch or the zeroing of a buffer.
pub enum Node<'a, R: Replay> {
    Launch(&'a R::Op),
    Zero(&'a R::Mem, usize),
}

enum Op<O> {
    Launch(O),
    /// Zeroes held buffer `i`.
    Zero(usize),
}

struct Buffer<R: Replay> {
    kind: Kind,
    len: usize,
    buf: Held<R>,
    /// How many ops were recorded before it was handed out.
    at: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Outside a step, or not replaying: everything runs as it comes.
    Direct,
    Recording,
    /// Comparing with the recording: the next op and buffer to expect.
    Replaying {
        op: usize,
        buf: usize,
    },
    /// This step left the recording: the rest runs as it comes.
    Diverged,
}

/// How many steps ran which way, for a run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Steps run launch by launch: replaying off, the first step, profiled steps.
    pub direct: usize,
    pub recorded: usize,
    pub replayed: usize,
    /// Steps that left their recording (run as they came).
    pub diverged: usize,
}

impl Counts {
    pub const NONE: Counts = Counts { direct: 0, recorded: 0, replayed: 0, diverged: 0 };

    /// Every step begun.
    pub fn steps(&self) -> usize {
        self.direct + self.recorded + self.replayed + self.diverged
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.direct += o.direct;
        self.recorded += o.recorded;
        self.replayed += o.replayed;
        self.diverged += o.diverged;
    }
}

/// A device's recording of its last step, and what it is doing now.
pub struct Recorder<R: Replay> {
    on: bool,
    mode: Mode,
    bufs: Vec<Buffer<R>>,
    ops: Vec<Op<R::Op>>,
    /// Whether `ops` is a whole step that may be replayed.
    complete: bool,
    graph: Option<R::Graph>,
    /// Steps in a row that left their recording; at [`GIVE_UP`] the recorder stops trying.
    misses: usize,
    counts: Counts,
    /// Why replaying was turned off, if it was.
    off: Option<String>,
    /// Whether a step has begun before: the first allocates what later steps keep (moments,
    /// saved statistics), so it is not recorded.
    started: bool,
}

/// Steps in a row whose recording did not fit before a device stops recording.
const GIVE_UP: usize = 3;

impl<R: Replay> Recorder<R> {
    /// A recorder that records and replays when `on`.
    pub fn new(on: bool) -> Recorder<R> {
        Recorder {
            on,
            mode: Mode::Direct,
            bufs: Vec::new(),
            ops: Vec::new(),
            complete: false,
            graph: None,
            misses: 0,
            counts: Counts::default(),
            off: (!on).then(|| "turned off".to_string()),
            started: false,
        }
    }

    /// How many steps ran launch by launch, were recorded, replayed and left their recording.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Why steps are not replayed, if they are not.
    pub fn off(&self) -> Option<&str> {
        self.off.as_deref()
    }

    /// A training step begins: it is replayed if a recording exists, else recorded (from the
    /// second step on). A profile times each launch, so a profiled step runs as it comes. A
    /// step left unended first runs what it skipped.
    pub fn begin_step(&mut self, r: &R) {
        if matches!(self.mode, Mode::Replaying { .. }) {
            self.diverge(r);
        }
        let first = !std::mem::replace(&mut self.started, true);
        self.mode = if !self.on || first || crate::profile::on() {
            self.counts.direct += 1;
            Mode::Direct
        } else if self.complete {
            Mode::Replaying { op: 0, buf: 0 }
        } else {
            self.graph = None;
            self.ops.clear();
            self.bufs.clear();
            Mode::Recording
        };
    }

    /// A buffer of `len` floats of `kind` ([`Kind::Zeros`] or [`Kind::Scratch`]): the recorded
    /// one when replaying, else `make()`.
    pub fn alloc(&mut self, r: &R, kind: Kind, len: usize, make: impl FnOnce() -> R::Mem) -> R::Mem {
        match self.handout(r, kind, len, |_| {}) {
            Some(Held::F(m)) => m,
            _ => {
                let m = make();
                self.hold(kind, len, Held::F(m.clone()));
                m
            }
        }
    }

    /// An upload of `len` values ([`Kind::Floats`] or [`Kind::Words`]): the recorded buffer
    /// with the new values `write`n into it when replaying, else `make()`.
    pub fn upload(
        &mut self,
        r: &R,
        kind: Kind,
        len: usize,
        make: impl FnOnce() -> Held<R>,
        write: impl FnOnce(&Held<R>),
    ) -> Held<R> {
        match self.handout(r, kind, len, write) {
            Some(h) => h,
            None => {
                let h = make();
                self.hold(kind, len, h.clone());
                h
            }
        }
    }

    /// The recorded buffer when it is the one expected (after `write` or zeroing it), else
    /// None (the step leaves its recording when replaying).
    fn handout(&mut self, r: &R, kind: Kind, len: usize, write: impl FnOnce(&Held<R>)) -> Option<Held<R>> {
        let Mode::Replaying { op, buf } = self.mode else { return None };
        let b = self.bufs.get(buf).filter(|b| b.kind == kind && b.len == len && b.at == op);
        let Some(b) = b else {
            self.diverge(r);
            return None;
        };
        let h = b.buf.clone();
        let op = match kind {
            Kind::Zeros => op + 1,
            Kind::Scratch => op,
            Kind::Floats | Kind::Words => {
                write(&h);
                op
            }
        };
        self.mode = Mode::Replaying { op, buf: buf + 1 };
        Some(h)
    }

    /// Keeps a buffer made while recording (a zeroed one is zeroed again at each replay).
    fn hold(&mut self, kind: Kind, len: usize, buf: Held<R>) {
        if self.mode == Mode::Recording {
            if kind == Kind::Zeros {
                self.ops.push(Op::Zero(self.bufs.len()));
            }
            let at = self.ops.len() - (kind == Kind::Zeros) as usize;
            self.bufs.push(Buffer { kind, len, buf, at });
        }
    }

    /// A launch: run (and noted when recording), or compared with the recording.
    pub fn launch(&mut self, r: &R, o: R::Op) {
        if let Mode::Replaying { op, buf } = self.mode {
            if matches!(self.ops.get(op), Some(Op::Launch(x)) if *x == o) {
                self.mode = Mode::Replaying { op: op + 1, buf };
                return;
            }
            self.diverge(r);
        }
        r.run(&o);
        if self.mode == Mode::Recording {
            self.ops.push(Op::Launch(o));
        }
    }

    /// The host is about to read a buffer: what was skipped runs first.
    pub fn before_read(&mut self, r: &R) {
        if matches!(self.mode, Mode::Replaying { .. }) {
            self.diverge(r);
        }
    }

    /// Work the recording cannot hold is about to run: what was skipped runs first, and a step
    /// being recorded will not be replayed.
    pub fn unrecorded(&mut self, r: &R) {
        match self.mode {
            Mode::Replaying { .. } => self.diverge(r),
            Mode::Recording => self.mode = Mode::Diverged,
            Mode::Direct | Mode::Diverged => {}
        }
    }

    /// Leaves the recording: runs the launches skipped so far; the rest of the step runs as it
    /// comes, and the next step is recorded.
    fn diverge(&mut self, r: &R) {
        if let Mode::Replaying { op, .. } = self.mode {
            for o in &self.ops[..op] {
                self.run(r, o);
            }
        }
        self.mode = Mode::Diverged;
    }

    fn run(&self, r: &R, o: &Op<R::Op>) {
        match o {
            Op::Launch(x) => r.run(x),
            Op::Zero(i) => r.zero(self.zeroed(*i), self.bufs[*i].len),
        }
    }

    /// The step ends: a replayed step's launches run as the graph.
    pub fn end_step(&mut self, r: &R) {
        if let Mode::Replaying { op, buf } = self.mode
            && (op < self.ops.len() || buf < self.bufs.len())
        {
            // Less than the recording: what was skipped runs now.
            self.diverge(r);
        }
        match std::mem::replace(&mut self.mode, Mode::Direct) {
            Mode::Direct => {}
            Mode::Recording => {
                self.counts.recorded += 1;
                self.complete = self.replayable();
                if !self.complete {
                    self.miss();
                }
            }
            Mode::Replaying { .. } => {
                if self.graph.is_none() {
                    match r.build(&self.nodes()) {
                        Ok(g) => self.graph = Some(g),
                        Err(why) => return self.fall_back(r, format!("the step does not build as a graph: {why}")),
                    }
                }
                match r.replay(self.graph.as_ref().expect("built above")) {
                    Ok(()) => {
                        self.counts.replayed += 1;
                        self.misses = 0;
                    }
                    Err(why) => self.fall_back(r, format!("a graph does not launch: {why}")),
                }
            }
            Mode::Diverged => {
                self.counts.diverged += 1;
                self.complete = false;
                self.miss();
            }
        }
    }

    /// The recording as a graph's nodes.
    fn nodes(&self) -> Vec<Node<'_, R>> {
        self.ops
            .iter()
            .map(|o| match o {
                Op::Launch(x) => Node::Launch(x),
                Op::Zero(i) => Node::Zero(self.zeroed(*i), self.bufs[*i].len),
            })
            .collect()
    }

    /// Held buffer `i`, which the step allocated zeroed.
    fn zeroed(&self, i: usize) -> &R::Mem {
        match &self.bufs[i].buf {
            Held::F(m) => m,
            Held::W(_) => unreachable!("zeroed buffers are floats"),
        }
    }

    /// A recording is replayable unless a launch reads memory that a later upload of the same
    /// step was given (the upload is written before the graph runs, so that launch would read
    /// the new values).
    fn replayable(&self) -> bool {
        self.bufs.iter().filter(|b| matches!(b.kind, Kind::Floats | Kind::Words)).all(|b| {
            let span = R::span(&b.buf);
            self.ops[..b.at].iter().all(|o| match o {
                Op::Launch(x) => R::pointers(x).iter().all(|p| !span.contains(p)),
                Op::Zero(_) => true,
            })
        })
    }

    /// Nothing of a replayed step ran: it runs launch by launch, and replaying stops.
    fn fall_back(&mut self, r: &R, why: String) {
        self.ops.iter().for_each(|o| self.run(r, o));
        self.turn_off(why);
    }

    fn miss(&mut self) {
        self.misses += 1;
        if self.misses >= GIVE_UP {
            self.turn_off(format!("{GIVE_UP} steps in a row did not fit their recording"));
        }
    }

    fn turn_off(&mut self, why: String) {
        self.on = false;
        self.complete = false;
        self.graph = None;
        self.ops.clear();
        self.bufs.clear();
        self.off = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A launcher whose launches are numbers it logs, and whose graphs can be refused.
    #[derive(Default)]
    struct Log {
        ran: RefCell<Vec<String>>,
        refuse_build: bool,
        refuse_launch: bool,
    }

    impl Replay for Log {
        type Mem = ();
        type Words = ();
        type Op = u32;
        type Graph = Vec<u32>;
        fn run(&self, op: &u32) {
            self.ran.borrow_mut().push(op.to_string());
        }
        fn zero(&self, _: &(), _: usize) {
            self.ran.borrow_mut().push("zero".into());
        }
        fn build(&self, nodes: &[Node<'_, Log>]) -> Result<Vec<u32>, String> {
            let ops = nodes.iter().filter_map(|n| if let Node::Launch(o) = n { Some(**o) } else { None });
            if self.refuse_build { Err("refused".into()) } else { Ok(ops.collect()) }
        }
        fn replay(&self, g: &Vec<u32>) -> Result<(), String> {
            if self.refuse_launch {
                return Err("refused".into());
            }
            self.ran.borrow_mut().push(format!("graph {g:?}"));
            Ok(())
        }
        fn pointers(_: &u32) -> Vec<u64> {
            Vec::new()
        }
        fn span(_: &Held<Log>) -> Range<u64> {
            0..0
        }
    }

    /// Steps of `ops` each (a zeroed allocation where an op is 0), and what ran.
    fn steps(log: &Log, rec: &mut Recorder<Log>, steps: &[&[u32]]) -> Vec<String> {
        for ops in steps {
            rec.begin_step(log);
            for &o in *ops {
                if o == 0 {
                    rec.alloc(log, Kind::Zeros, 4, || ());
                } else {
                    rec.launch(log, o);
                }
            }
            rec.end_step(log);
        }
        log.ran.take()
    }

    #[test]
    fn the_second_step_is_recorded_and_later_ones_replay_it() {
        let (log, mut rec) = (Log::default(), Recorder::new(true));
        let ran = steps(&log, &mut rec, &[&[1, 2], &[1, 0, 2], &[1, 0, 2], &[1, 0, 2]]);
        assert_eq!(ran, ["1", "2", "1", "2", "graph [1, 2]", "graph [1, 2]"]);
        assert_eq!(rec.counts(), Counts { direct: 1, recorded: 1, replayed: 2, diverged: 0 });
    }

    #[test]
    fn a_step_that_leaves_its_recording_runs_what_it_skipped_first() {
        let (log, mut rec) = (Log::default(), Recorder::new(true));
        steps(&log, &mut rec, &[&[1, 2], &[1, 0, 2, 3]]);
        // Launch 4 where 3 was recorded; then a step shorter than the recording.
        let ran = steps(&log, &mut rec, &[&[1, 0, 2, 4], &[5, 6], &[5, 6], &[5]]);
        assert_eq!(ran, ["1", "zero", "2", "4", "5", "6", "graph [5, 6]", "5"]);
        assert_eq!(rec.counts(), Counts { direct: 1, recorded: 2, replayed: 1, diverged: 2 });
    }

    #[test]
    fn a_step_left_unended_runs_what_it_skipped_when_the_next_begins() {
        let (log, mut rec) = (Log::default(), Recorder::new(true));
        steps(&log, &mut rec, &[&[1, 2], &[1, 2]]);
        rec.begin_step(&log);
        rec.launch(&log, 1);
        assert!(log.ran.borrow().is_empty(), "a replayed launch waits for the graph");
        let ran = steps(&log, &mut rec, &[&[1, 2]]);
        assert_eq!(ran, ["1", "graph [1, 2]"]);
    }

    #[test]
    fn a_graph_the_driver_refuses_runs_launch_by_launch_and_replaying_stops() {
        for (refuse_build, refuse_launch) in [(true, false), (false, true)] {
            let log = Log { refuse_build, refuse_launch, ..Log::default() };
            let mut rec = Recorder::new(true);
            let ran = steps(&log, &mut rec, &[&[1, 2], &[1, 2], &[1, 2], &[1, 2]]);
            assert_eq!(ran, ["1", "2", "1", "2", "1", "2", "1", "2"]);
            assert!(rec.off().is_some_and(|why| why.contains("refused")), "{:?}", rec.off());
        }
    }

    #[test]
    fn recording_stops_after_three_steps_in_a_row_that_do_not_fit() {
        let (log, mut rec) = (Log::default(), Recorder::new(true));
        steps(&log, &mut rec, &[&[1], &[1], &[2], &[1], &[2], &[1], &[2], &[1], &[1]]);
        assert_eq!(rec.counts(), Counts { direct: 3, recorded: 3, replayed: 0, diverged: 3 });
        assert!(rec.off().is_some_and(|why| why.contains("in a row")));
    }
}
