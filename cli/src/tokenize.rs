//! `kiln tokenize`: the ids of a text, BOS added exactly when llama.cpp would.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::Tokenizer;
use serde_json::json;

use crate::args::text_input;
use crate::common::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Text to tokenize
    text: Option<String>,
    /// Read the text from a file (- for standard input)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Treat special-token text such as <|im_start|> as plain text
    #[arg(long)]
    no_parse_special: bool,
    /// Also print each token's text (bytes that are not whole characters as \xNN)
    #[arg(long)]
    pieces: bool,
    /// Print one JSON object as the last line of stdout ({"ids": [...]}, with --pieces
    /// also "pieces")
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let Some(text) = text_input(args.text.as_deref(), args.file.as_ref())? else {
        return Err(Error::Invalid(
            "no text: give it as an argument or with -f FILE (- for standard input)".into(),
        ));
    };
    // The tokenizer alone, from the header: a model whose tensors kiln cannot run can
    // still be tokenized.
    let gguf = Gguf::open(&args.model)?;
    let tok = &Tokenizer::from_gguf(&gguf)?;
    let ids = tok.encode(&text, true, !args.no_parse_special);
    if args.json {
        let mut obj = json!({ "ids": ids });
        if args.pieces {
            obj["pieces"] = json!(
                ids.iter()
                    .map(|&id| readable_piece(tok, id))
                    .collect::<Vec<_>>()
            );
        }
        print_json(&obj);
    } else if args.pieces {
        for &id in &ids {
            println!("{id:>7}  {}", readable_piece(tok, id));
        }
    } else {
        println!("{ids:?}");
    }
    Ok(())
}

/// What a token stands for in the text, as a reader wants it: the decoded bytes (special
/// tokens as written), whitespace made visible, and bytes that are not a whole UTF-8
/// character (half of a multi-byte character) as `\xNN`.
pub fn readable_piece(tok: &Tokenizer, id: u32) -> String {
    let bytes = tok.token_piece(id, true);
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                ' ' => out.push('␣'),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}
