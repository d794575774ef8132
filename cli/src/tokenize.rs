//! `kiln tokenize`: the ids of a text, BOS added exactly when llama.cpp would.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::Tokenizer;
use serde_json::json;

use crate::common::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    model: PathBuf,
    /// Text to tokenize.
    text: String,
    /// Treat special-token text such as <|im_start|> as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Also print each token's text.
    #[arg(long)]
    pieces: bool,
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    // The metadata is enough: a model whose tensors kiln cannot load still tokenizes.
    let tok = &Tokenizer::from_gguf(&Gguf::open_metadata(&args.model)?)?;
    let ids = tok.encode(&args.text, true, !args.no_parse_special);
    if args.json {
        let mut obj = json!({ "ids": ids });
        if args.pieces {
            obj["pieces"] = json!(ids.iter().map(|&id| tok.token_text(id)).collect::<Vec<_>>());
        }
        print_json(&obj);
    } else if args.pieces {
        for &id in &ids {
            println!("{id:6} -> {:?}", tok.token_text(id));
        }
    } else {
        println!("{ids:?}");
    }
    Ok(())
}
