//! The LLM stage's parts: a trainable Llama-family decoder, its weights and
//! tokenizer, adapters (LoRA, P-Tuning v2) in the PEFT layout, and prompts.

pub mod adapters;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod frozen;
pub mod load;
pub mod peft;
pub mod prompt;
pub mod stack;
pub mod tokenizer;
