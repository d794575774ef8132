//! The engine thread: one OS thread owns the compiled model and runs the scheduler;
//! [`Engine`] is the handle the HTTP side holds (submit, permits, shutdown).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::api::{ApiError, Limits};
use super::metrics::Metrics;
use super::scheduler::{Scheduler, SchedulerConfig};
use super::{Event, FinishReason, Permit, Permits, Request, ServeConfig, ServeError};
use kiln_engine::Error;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::model::Model;

/// The KV pool's size when no budget is given (and the context × sequences needs more).
pub const DEFAULT_KV_BUDGET_BYTES: usize = 1 << 30;

/// How long the engine thread waits for new requests when a step found nothing to run.
const IDLE_POLL: Duration = Duration::from_millis(2);

enum Command {
    Submit(Box<Request>),
    /// Take no new requests; end open ones after `drain`.
    Shutdown {
        drain: Duration,
    },
}

/// What the engine runs with, known once the model is compiled.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub backend: &'static str,
    pub limits: Limits,
    pub max_seqs: usize,
    pub kv_page_count: usize,
}

/// The handle to the engine thread.
#[derive(Debug)]
pub struct Engine {
    commands: Mutex<Sender<Command>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    model: Arc<Model>,
    metrics: Arc<Metrics>,
    permits: Permits,
    info: EngineInfo,
}

/// The compile options a scheduler of `config` needs: steps of `step_tokens` tokens (at
/// least one per sequence) and one logits row per sequence, plus `spec_k_max` for the
/// guesses of each (within the step's tokens). The KV pool: `kv_budget_bytes` if given;
/// else with a memory budget, room for `n_ctx` × `max_seqs` positions as far as the
/// budget goes (what it leaves after the arena and buffers); else that room, at most
/// [`DEFAULT_KV_BUDGET_BYTES`].
pub fn compile_options(config: &ServeConfig, model: &Model) -> CompileOptions {
    let c = &model.config;
    let n_ctx = config.n_ctx.unwrap_or(c.context_length).max(1);
    let max_seqs = config.max_seqs.max(1);
    let default_kv_budget = || {
        let layout = c.kv_layout(config.kv_dtype).ok()?;
        let step = config.step_tokens.clamp(1, n_ctx);
        let pages = c
            .kv_groups()
            .pages_per_sequence(layout.kv_page_size(), n_ctx, step)
            * max_seqs;
        Some((pages * layout.page_bytes()).min(DEFAULT_KV_BUDGET_BYTES))
    };
    let kv_budget_bytes = match (config.kv_budget_bytes, config.mem_budget_bytes) {
        (Some(kv), _) => Some(kv),
        (None, Some(_)) => None,
        (None, None) => default_kv_budget(),
    };
    let max_step_tokens = config.step_tokens.max(max_seqs);
    CompileOptions {
        kv_dtype: config.kv_dtype,
        max_seqs,
        max_step_tokens,
        max_step_outputs: (max_seqs * (1 + config.spec_k_max)).min(max_step_tokens),
        kv_budget_bytes,
        mem_budget_bytes: config.mem_budget_bytes,
        ..CompileOptions::new(n_ctx)
    }
}

/// The draft model's options: the target's steps, one logits row per sequence (a guess
/// round asks one of each), its own KV pool.
fn draft_options(config: &ServeConfig, draft: &Model) -> CompileOptions {
    let mut options = compile_options(config, draft);
    options.max_step_outputs = options.max_seqs;
    options
}

impl Engine {
    /// Compile the model on its own thread and start scheduling. Errors in opening the
    /// backend or compiling come back here.
    pub fn start(model: Arc<Model>, config: &ServeConfig) -> Result<Engine, ServeError> {
        if config.max_seqs == 0 || config.step_tokens == 0 {
            return Err(Error::Invalid(format!(
                "max_seqs ({}) and step_tokens ({}) must be at least 1",
                config.max_seqs, config.step_tokens
            ))
            .into());
        }
        let options = compile_options(config, &model);
        let sched_config = SchedulerConfig {
            max_seqs: options.max_seqs,
            step_tokens: options.max_step_tokens,
            spec_k_max: config.spec_k_max,
        };
        let draft = config
            .draft
            .as_ref()
            .map(|d| (Arc::clone(d), draft_options(config, d)));
        let metrics = Arc::new(Metrics::default());
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let open_backend = Arc::clone(&config.backend);
        let model_id = config.model_id.clone();
        // The vocabulary's token trie for constrained output, built once (a vocabulary
        // llguidance cannot take leaves the server without it: those requests get a 400).
        let structured = kiln_structured::Structured::new(&model.tokenizer).ok();
        let thread_model = Arc::clone(&model);
        let thread_metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || {
                let model = thread_model;
                let started = open_backend()
                    .and_then(|backend| Compiled::new(&model, backend, options))
                    .and_then(|compiled| Scheduler::new(compiled, sched_config, thread_metrics))
                    .and_then(|sched| match &draft {
                        None => Ok(sched),
                        Some((draft, options)) => {
                            let backend = open_backend()?;
                            Ok(sched.with_draft(Compiled::new(draft, backend, *options)?))
                        }
                    });
                let mut sched = match started {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = EngineInfo {
                    backend: sched.backend_name(),
                    limits: Limits {
                        model_id,
                        n_ctx: sched.n_ctx(),
                        kv_capacity: sched.max_sequence_tokens(),
                        structured,
                    },
                    max_seqs: sched_config.max_seqs,
                    kv_page_count: sched.kv_stats().kv_page_count,
                };
                if ready_tx.send(Ok(info)).is_ok() {
                    run(&mut sched, &rx);
                }
            })
            .map_err(|source| ServeError::Io {
                what: "cannot start the engine thread".into(),
                source,
            })?;
        let info = match ready_rx.recv() {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(ServeError::EngineGone),
        };
        Ok(Engine {
            commands: Mutex::new(commands),
            thread: Mutex::new(Some(thread)),
            model,
            metrics,
            permits: Permits::new(info.max_seqs + config.max_queue),
            info,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn permits(&self) -> &Permits {
        &self.permits
    }

    /// A place for one more request, or None when running + queued requests are at the limit.
    pub fn try_permit(&self) -> Option<Permit> {
        self.permits.try_acquire()
    }

    /// Hand a request to the scheduler; its events come on `req.events`.
    pub fn submit(&self, req: Request) -> Result<(), ApiError> {
        self.send(Command::Submit(Box::new(req)))
            .map_err(|_| ApiError::unavailable("the engine has stopped"))
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Take no new requests; open ones may run `drain` longer, then end (`length`).
    pub fn shutdown(&self, drain: Duration) {
        let _ = self.send(Command::Shutdown { drain });
    }

    /// Wait for the engine thread to end (after [`Engine::shutdown`]).
    pub fn join(&self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn send(&self, command: Command) -> Result<(), ()> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        commands.send(command).map_err(|_| ())
    }
}

/// The engine thread's loop: take commands, step, until shut down and empty.
fn run(sched: &mut Scheduler<'_>, commands: &Receiver<Command>) {
    let mut deadline: Option<Instant> = None;
    let stopping = ApiError::unavailable("the server is shutting down");
    let handle =
        |sched: &mut Scheduler<'_>, command: Command, deadline: &mut Option<Instant>| match command
        {
            Command::Submit(req) if deadline.is_some() => {
                let _ = req.events.send(Event::Failed(stopping.clone()));
            }
            Command::Submit(req) => sched.submit(*req),
            Command::Shutdown { drain } => {
                *deadline = Some(deadline.unwrap_or_else(|| Instant::now() + drain));
            }
        };
    loop {
        if sched.is_idle() {
            if deadline.is_some() {
                return;
            }
            match commands.recv() {
                Ok(command) => handle(sched, command, &mut deadline),
                Err(_) => return, // every handle is gone
            }
        }
        loop {
            match commands.try_recv() {
                Ok(command) => handle(sched, command, &mut deadline),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    deadline.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Failing to free pages here leaves nothing to protect: the engine is ending.
            let _ = sched.end_all(FinishReason::Length, &stopping);
            return;
        }
        // A failed step has already failed its requests (500); the next one goes on.
        let progressed = sched.step().is_ok_and(|o| o.sequences > 0);
        if !progressed {
            match commands.recv_timeout(IDLE_POLL) {
                Ok(command) => handle(sched, command, &mut deadline),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    deadline.get_or_insert_with(Instant::now);
                }
            }
        }
    }
}
