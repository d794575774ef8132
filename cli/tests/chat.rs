//! `kiln chat` as a person and as a script use it: through a pseudo-terminal (Ctrl-C stops
//! a reply and returns to the prompt; tests/python/chat_pty.py drives it), and on piped
//! standard input, where every turn after the first reuses the cache and the second reply
//! is exactly what the whole conversation, rendered and run from scratch, gives.

use std::io::Write;
use std::process::{Command, Stdio};

use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::{ChatMessage, Tokenizer};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn ctrl_c_in_a_terminal_stops_the_reply_not_the_chat() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/chat_pty.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg(kiln_tests::reference_model())
        .output()
        .expect("python3 runs (README: Python 3 is needed)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `[… reused from the cache, … computed …]` line of each turn: (reused, computed).
fn cache_use(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split("prompt: ").nth(1)?;
            let mut numbers = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().unwrap());
            Some((numbers.next()?, numbers.next()?))
        })
        .collect()
}

#[test]
fn piped_turns_reuse_the_cache_and_answer_from_the_whole_conversation() {
    let model = kiln_tests::reference_model();
    let questions = [
        "Remember the word apple.",
        "Which word did I ask you to remember?",
        "Thanks!",
    ];
    let mut child = kiln()
        .args(["chat", "-m"])
        .arg(&model)
        .args(["--temp", "0", "-n", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", questions.join("\n")).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<&str> = stdout.lines().collect();
    assert_eq!(replies.len(), 3, "one line per reply: {stdout:?}");
    let uses = cache_use(&stderr);
    assert_eq!(uses.len(), 3, "{stderr}");
    assert_eq!(uses[0].0, 0, "nothing to reuse on the first turn: {stderr}");
    for (turn, &(reused, computed)) in uses.iter().enumerate().skip(1) {
        assert!(
            reused > computed,
            "turn {turn}: {reused} reused, {computed} computed: {stderr}"
        );
    }

    // The second reply is what the two-turn conversation gives when run from scratch.
    let tokenizer = Tokenizer::from_gguf(&Gguf::open(&model).unwrap()).unwrap();
    let conversation = [
        ChatMessage::new("user", questions[0]),
        ChatMessage::new("assistant", replies[0]),
        ChatMessage::new("user", questions[1]),
    ];
    let prompt = tokenizer.apply_chat_template(&conversation, true).unwrap();
    let run = kiln()
        .args(["run", "-m"])
        .arg(&model)
        .args(["-p", &prompt, "--temp", "0", "-n", "24", "--json"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        json["text"].as_str().unwrap().trim_end(),
        replies[1].trim_end()
    );
}
