//! The fuzz harnesses (`fuzz/harness.rs`, included here) on the stable toolchain: every input of the
//! committed corpus (`fuzz/corpus/<target>/`, grown by cargo-fuzz), then a fixed number of
//! random and mutated inputs per target from a fixed seed, so a run is reproducible.

#[path = "../../fuzz/harness.rs"]
mod harness;

use chat_router::rng::Rng;
use std::path::Path;

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness, usize); 4] = [
    ("duckchat", harness::duckchat, 200_000),
    ("text", harness::text, 200_000),
    ("group", harness::group, 200_000),
    ("engine", harness::engine, 20_000),
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort(); // read_dir's order is the file system's
    inputs
}

/// An input from `seeds` with a few random edits, or plain random bytes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.chance(0.2) {
        let len = rng.below(300) as usize;
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut input = seeds[rng.below(seeds.len() as u64) as usize].clone();
    for _ in 0..=rng.below(8) {
        let at = rng.below(input.len() as u64 + 1) as usize;
        match rng.below(5) {
            0 if at < input.len() => input[at] = rng.next_u64() as u8,
            1 => input.insert(at, rng.next_u64() as u8),
            2 if at < input.len() => {
                input.remove(at);
            }
            3 => {
                // Splice in a piece of another seed: combines requests the way libFuzzer does.
                let other = &seeds[rng.below(seeds.len() as u64) as usize];
                let from = rng.below(other.len() as u64 + 1) as usize;
                let to = (from + rng.below(64) as usize).min(other.len());
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ => input.truncate(at),
        }
    }
    input
}

#[test]
fn the_corpus_replays_cleanly() {
    for (target, harness, _) in TARGETS {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "{target} has a corpus");
        for input in &inputs {
            harness(input);
        }
    }
}

#[test]
fn random_and_mutated_inputs_break_no_invariant() {
    for (target, harness, runs) in TARGETS {
        let seeds = corpus(target);
        let mut rng = Rng::new(0x5eed ^ runs as u64);
        for _ in 0..runs {
            let input = mutate(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| harness(&input));
            assert!(
                outcome.is_ok(),
                "{target} failed on {input:?}; save it under fuzz/corpus/{target}/ once fixed"
            );
        }
    }
}
