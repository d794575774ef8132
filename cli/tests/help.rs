//! The README and `--help` agree: every flag of every command is in README.md's command
//! block and every flag named there exists, and every flag has a description.

use std::collections::BTreeSet;
use std::process::Command;

fn kiln(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs");
    assert!(out.status.success(), "kiln {args:?} failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands `kiln --help` lists.
fn commands() -> Vec<String> {
    let help = kiln(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// The options of `kiln <command> --help`: (short flag if any, long flag), and the line
/// after each (its description).
fn options(help: &str) -> Vec<(Option<String>, String, String)> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if !line.starts_with("  ")
            || !(t.starts_with("--") || (t.starts_with('-') && t.get(2..4) == Some(", ")))
        {
            continue;
        }
        let (short, rest) = match t.strip_prefix('-').filter(|_| !t.starts_with("--")) {
            Some(r) => (Some(format!("-{}", &r[..1])), &t[4..]),
            None => (None, t),
        };
        let long = rest.split_whitespace().next().unwrap_or("").to_string();
        if long == "--help" || long == "--version" {
            continue;
        }
        let description = lines.get(i + 1).map_or("", |l| l.trim()).to_string();
        out.push((short, long, description));
    }
    out
}

/// Short flags in `text` (`-x` standing alone).
fn short_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '|')
        .filter(|w| w.len() == 2 && w.starts_with('-') && w.as_bytes()[1].is_ascii_alphabetic())
        .map(str::to_string)
        .collect()
}

/// Long flags in `text` (`--name`), without `--help`/`--version`.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let rest = &text[i + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let before = text[..i].chars().next_back();
        let starts_a_flag = before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '-');
        if starts_a_flag && !name.is_empty() && name != "help" && name != "version" {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// README.md's command block: per command, the text of its synopsis.
fn readme_synopses() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block: String = readme
        .split("## Commands")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README.md has a ```sh block under ## Commands")
        .to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("kiln ") {
            let command = rest.split_whitespace().next().unwrap_or("").to_string();
            out.push((command, rest.to_string()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(' ');
            last.1.push_str(line);
        }
    }
    out
}

#[test]
fn readme_and_help_name_the_same_flags() {
    let readme = readme_synopses();
    let mut problems = Vec::new();
    for command in commands() {
        let Some((_, synopsis)) = readme.iter().find(|(c, _)| *c == command) else {
            problems.push(format!("README.md has no synopsis of `kiln {command}`"));
            continue;
        };
        let in_help = options(&kiln(&[&command, "--help"]));
        let (longs, shorts) = (long_flags(synopsis), short_flags(synopsis));
        for (short, long, _) in &in_help {
            let named = longs.contains(long) || short.as_ref().is_some_and(|s| shorts.contains(s));
            if !named {
                problems.push(format!("`kiln {command} {long}` is missing from README.md"));
            }
        }
        for f in &longs {
            if !in_help.iter().any(|(_, long, _)| long == f) {
                problems.push(format!(
                    "README.md names `kiln {command} {f}`, which does not exist"
                ));
            }
        }
        for f in &shorts {
            if !in_help
                .iter()
                .any(|(short, _, _)| short.as_ref() == Some(f))
            {
                problems.push(format!(
                    "README.md names `kiln {command} {f}`, which does not exist"
                ));
            }
        }
    }
    for (command, _) in &readme {
        if !commands().contains(command) {
            problems.push(format!(
                "README.md documents `kiln {command}`, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_says_what_it_does() {
    for command in commands() {
        for (_, long, description) in options(&kiln(&[&command, "--help"])) {
            assert!(
                !description.is_empty(),
                "`kiln {command} {long}` has no description"
            );
        }
    }
}
