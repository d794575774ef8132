//! `kiln chat`: an interactive conversation in the model's chat template. The history
//! stays in the KV cache between turns: each turn renders the whole conversation, keeps
//! the tokens the cache already holds (the common prefix) and runs only the rest, so the
//! time to the first token does not grow with the conversation. `/reset` starts again,
//! `/exit` (or end of input) leaves, Ctrl-C stops a reply and returns to the prompt.
//! Works on a terminal and on piped standard input (one line, one message).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln_engine::Error;
use kiln_engine::driver::{GenerateRequest, StopReason, extend};
use kiln_engine::model::Model;
use kiln_engine::runner::Runner;
use kiln_engine::sampler::{Sampler, SamplerConfig};
use kiln_engine::tokenizer::ChatMessage;

use crate::args::{DeviceArgs, SamplingArgs};
use crate::common::{context_size, load_model, print_json, runner};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// A system message put before the conversation [default: none]
    #[arg(long)]
    system: Option<String>,
    /// Tokens one reply may take at most
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    n_predict: usize,
    /// Context size in tokens: the whole conversation must fit [default: the model's]
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// At the end, print one JSON object (turns, tokens, backend) as the last line of stdout
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    Sampler::new(args.sampling.config())?;
    let model = load_model(&args.model)?;
    let n_ctx = context_size(&model, args.ctx_size)?;
    let runner = runner(&model, &args.device, n_ctx, 1)?;
    let mut chat = Chat::new(&model, runner, args.sampling.config(), args.n_predict);
    if let Some(system) = args.system {
        chat.system = Some(system);
    }
    let totals = chat.interact()?;
    if args.json {
        print_json(&serde_json::json!({
            "turns": totals.turns,
            "tokens": totals.tokens,
            "backend": chat.runner.name(),
        }));
    }
    Ok(())
}

/// What a whole conversation did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub turns: usize,
    pub tokens: usize,
}

/// Set while a reply is being generated; Ctrl-C then stops the reply, else leaves.
static GENERATING: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C during a reply; the token callback reads it.
static STOP_REPLY: AtomicBool = AtomicBool::new(false);

/// A conversation with its runner: the messages so far and the ids the runner's context
/// holds (the rendered prompt of the last turn and the reply tokens fed back).
pub struct Chat<'m> {
    model: &'m Model,
    runner: Box<dyn Runner + 'm>,
    sampler: SamplerConfig,
    n_predict: usize,
    pub system: Option<String>,
    messages: Vec<ChatMessage>,
    context: Vec<u32>,
}

/// What one turn did, for the line printed after a reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub reply: String,
    pub tokens: usize,
    /// Prompt tokens the cache held from earlier turns, and those computed now.
    pub reused: usize,
    pub computed: usize,
    pub ttft_ms: f64,
    pub decode_tok_s: f64,
    pub stopped: bool,
}

impl<'m> Chat<'m> {
    pub fn new(
        model: &'m Model,
        runner: Box<dyn Runner + 'm>,
        sampler: SamplerConfig,
        n_predict: usize,
    ) -> Chat<'m> {
        Chat {
            model,
            runner,
            sampler,
            n_predict,
            system: None,
            messages: Vec::new(),
            context: Vec::new(),
        }
    }

    /// Forget the conversation (the cache's pages stay as a prefix cache).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.context.clear();
        self.runner.reset();
    }

    /// One exchange: `text` as the user's message, the reply streamed to `out`.
    pub fn turn(&mut self, text: &str, out: &mut dyn Write) -> Result<Turn, Error> {
        let tok = &self.model.tokenizer;
        let mut messages = Vec::with_capacity(self.messages.len() + 2);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.extend(self.messages.iter().cloned());
        messages.push(ChatMessage::new("user", text));
        let prompt = tok.apply_chat_template(&messages, true)?;
        let ids = tok.encode(&prompt, true, true);
        if ids.len() >= self.runner.n_ctx() {
            return Err(Error::ContextFull {
                needed: ids.len() + 1,
                n_ctx: self.runner.n_ctx(),
            });
        }
        // Keep what the cache holds of this prompt; at least one token must run to give
        // the logits of the reply's first token.
        let common = self
            .context
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        self.runner.truncate(common);
        // A sliding-window model may have kept less: feed from where the runner is.
        let common = self.runner.position();
        self.context.truncate(common);
        let request = GenerateRequest {
            prompt_ids: ids[common..].to_vec(),
            max_tokens: self.n_predict,
            sampler: self.sampler.clone(),
            ignore_eos: false,
            logprobs: 0,
        };
        STOP_REPLY.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let generated = extend(self.runner.as_mut(), tok, &request, |event| {
            let _ = out.write_all(event.text.as_bytes());
            let _ = out.flush();
            !STOP_REPLY.load(Ordering::SeqCst)
        });
        GENERATING.store(false, Ordering::SeqCst);
        let generation = generated?;
        // The runner holds the prompt and every reply token but the last sampled one.
        let fed = generation.tokens.len().saturating_sub(1);
        self.context = ids;
        self.context.extend_from_slice(&generation.tokens[..fed]);
        self.context.truncate(self.runner.position());
        self.messages.push(ChatMessage::new("user", text));
        self.messages
            .push(ChatMessage::new("assistant", generation.text.as_str()));
        self.sampler.seed = self.sampler.seed.wrapping_add(1);
        Ok(Turn {
            reply: generation.text,
            tokens: generation.tokens.len(),
            reused: common,
            computed: generation.prompt_tokens,
            ttft_ms: generation.ttft_ms,
            decode_tok_s: generation.decode_tok_s,
            stopped: generation.stop_reason == StopReason::Cancelled,
        })
    }

    /// The read–reply loop over standard input.
    pub fn interact(&mut self) -> Result<Totals, Error> {
        let mut totals = Totals::default();
        let terminal = std::io::stdin().is_terminal();
        install_ctrl_c();
        if terminal {
            eprintln!(
                "kiln chat on {} ({} tokens of context). /reset starts again, /exit leaves, Ctrl-C stops a reply.",
                self.runner.name(),
                self.runner.n_ctx()
            );
        }
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            if terminal {
                eprint!("> ");
                let _ = std::io::stderr().flush();
            }
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(Error::Invalid(format!("cannot read standard input: {e}"))),
            }
            let text = line.trim();
            match text {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    self.reset();
                    eprintln!("(the conversation starts again)");
                    continue;
                }
                "/help" => {
                    eprintln!("/reset starts again, /exit leaves, Ctrl-C stops a reply");
                    continue;
                }
                _ if text.starts_with('/') => {
                    eprintln!("unknown command {text} (/reset, /exit, /help)");
                    continue;
                }
                _ => {}
            }
            let mut stdout = std::io::stdout().lock();
            match self.turn(text, &mut stdout) {
                Ok(turn) => {
                    totals.turns += 1;
                    totals.tokens += turn.tokens;
                    let _ = writeln!(stdout);
                    drop(stdout);
                    eprintln!(
                        "[{} tokens{}, {:.1} tok/s; prompt: {} reused from the cache, {} computed; first token {:.0} ms]",
                        turn.tokens,
                        if turn.stopped { ", stopped" } else { "" },
                        turn.decode_tok_s,
                        turn.reused,
                        turn.computed,
                        turn.ttft_ms,
                    );
                }
                Err(e @ Error::ContextFull { .. }) => {
                    drop(stdout);
                    eprintln!("error: {e}; /reset starts a new conversation");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(totals)
    }
}

/// Ctrl-C during a reply stops it; at the prompt it leaves, as a shell would. (Without the
/// `tty` feature Ctrl-C ends the program, as by default.)
#[cfg(not(feature = "tty"))]
fn install_ctrl_c() {}

/// Ctrl-C during a reply stops it; at the prompt it leaves, as a shell would.
#[cfg(feature = "tty")]
fn install_ctrl_c() {
    let installed = ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            STOP_REPLY.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will not stop replies ({e})");
    }
}
