//! `kiln tokenize`: the ids of a text, BOS added exactly when llama.cpp would.

use std::path::PathBuf;

use kiln_engine::Error;
use serde_json::json;

use crate::common::{load_model, print_json};

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
    let model = load_model(&args.model)?;
    let tok = &model.tokenizer;
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
