//! Tokenizers: a checkpoint's `tokenizer.json`, or a byte-level BPE rebuilt from
//! GGUF metadata (`tokenizer.ggml.tokens` / `merges`). The `smollm` pre-tokenizer
//! splits digits one by one, then applies the GPT-2 byte-level regex; candle's
//! own GGUF tokenizer does not know it.

use anyhow::{Context, Result, anyhow, bail};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// Each token's byte range in the text it came from.
pub type Offsets = Vec<(usize, usize)>;

pub struct Tok {
    pub inner: Tokenizer,
}

impl Tok {
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot read tokenizer {}: {e}", path.display()))?;
        Ok(Tok { inner })
    }

    pub fn from_gguf(ct: &Content) -> Result<Self> {
        let md = &ct.metadata;
        let get = |k: &str| {
            md.get(k)
                .with_context(|| format!("GGUF metadata has no `{k}`"))
        };
        let model = get("tokenizer.ggml.model")?.to_string()?.clone();
        if model != "gpt2" {
            bail!("GGUF tokenizer model {model:?} is not supported (byte-level BPE `gpt2` is)");
        }
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<_>>()?;
        let merges: Vec<(String, String)> = get("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| -> Result<(String, String)> {
                let s = v.to_string()?;
                let (a, b) = s
                    .split_once(' ')
                    .with_context(|| format!("GGUF merge {s:?} is not `a b`"))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("cannot build the BPE from GGUF metadata: {e}"))?;
        let mut tok = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        if pre == "smollm" || pre == "starcoder" || pre == "qwen2" || pre == "llama-bpe" {
            tok.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        } else {
            tok.with_pre_tokenizer(Some(byte_level));
        }
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3) are matched whole, never split by BPE.
        if let Some(Value::Array(types)) = md.get("tokenizer.ggml.token_type") {
            let special: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| t.to_i32().ok() == Some(3))
                .map(|(_, s)| AddedToken::from(s.clone(), true))
                .collect();
            tok.add_special_tokens(special)
                .map_err(|e| anyhow!("cannot add the GGUF control tokens: {e}"))?;
        }
        Ok(Tok { inner: tok })
    }

    /// One more than the largest token id (added tokens included): the rows an
    /// embedding matrix needs.
    pub fn id_count(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    /// Ids of `text`, no special tokens added (special tokens written in the text
    /// are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Ids of `text` and each token's byte range in it; `special` adds the
    /// tokenizer's special tokens (\[CLS\] … \[SEP\] for BERT), whose ranges are
    /// empty.
    pub fn encode_offsets(&self, text: &str, special: bool) -> Result<(Vec<u32>, Offsets)> {
        let e = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        let offsets = e
            .get_offsets()
            .iter()
            .zip(e.get_special_tokens_mask())
            .map(|(&o, &sp)| if sp == 1 { (0, 0) } else { o })
            .collect();
        Ok((e.get_ids().to_vec(), offsets))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode: {e}"))
    }
}
