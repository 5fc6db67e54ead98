//! The optimiser, the schedule, the data and the task generators.

use polysketch_core::seeded_rng;
use polysketch_gpt::data::{ByteTokenizer, Corpus, Tokenizer};
use polysketch_gpt::tasks::{COPY_COUNT, Task, exact_accuracy};
use polysketch_gpt::{AdamW, Decay, IGNORE, ParamInfo, Schedule};
use proptest::prelude::*;

#[test]
fn schedule_warms_up_then_decays_to_the_floor() {
    for decay in [Decay::Linear, Decay::Cosine] {
        let s = Schedule { peak: 1.0, warmup: 10, total: 110, decay, min_ratio: 0.1 };
        assert!((s.lr(0) - 0.1).abs() < 1e-12 && (s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12 && (s.lr(110) - 0.1).abs() < 1e-12);
        assert!((1..110).all(|t| t < 10 || s.lr(t + 1) <= s.lr(t)));
    }
}

#[test]
fn adamw_takes_the_textbook_step_and_refuses_nan() {
    let table = vec![
        ParamInfo { name: "w".into(), shape: vec![2], offset: 0, decay: true },
        ParamInfo { name: "b".into(), shape: vec![1], offset: 2, decay: false },
    ];
    let mut p = vec![1.0f64, -2.0, 0.5];
    let g = vec![0.3, -0.1, 0.2];
    let mut opt = AdamW::new(3, 0.9, 0.999, 1e-8, 0.1);
    let norm = opt.step(&mut p, &g, &table, 0.01, 0.0).unwrap();
    assert!((norm - (0.09f64 + 0.01 + 0.04).sqrt()).abs() < 1e-12);
    // first step: m̂ = g, v̂ = g², so the update is lr·sign(g) (+ decay on w)
    assert!((p[0] - (1.0 - 0.01 - 0.01 * 0.1 * 1.0)).abs() < 1e-9);
    assert!((p[1] - (-2.0 + 0.01 + 0.01 * 0.1 * 2.0)).abs() < 1e-9);
    assert!((p[2] - (0.5 - 0.01)).abs() < 1e-9);
    let before = p.clone();
    assert!(opt.step(&mut p, &[f64::NAN, 0.0, 0.0], &table, 0.01, 1.0).is_err());
    assert_eq!(p, before);
    // clipping scales the gradient to the clip norm: with a tiny clip the moments are tiny
    let mut q = vec![0.0f64; 3];
    let mut o2 = AdamW::new(3, 0.9, 0.999, 1e-8, 0.0);
    o2.step(&mut q, &[30.0, 40.0, 0.0], &table, 0.01, 5.0).unwrap();
    assert!((o2.m[0] - 0.1 * 3.0).abs() < 1e-12 && (o2.m[1] - 0.1 * 4.0).abs() < 1e-12);
    // a rate per tensor: b at twice w's rate moves twice as far, w as with one rate
    let mut r = vec![1.0f64, -2.0, 0.5];
    let mut o3 = AdamW::new(3, 0.9, 0.999, 1e-8, 0.1);
    let rate = |t: &ParamInfo| if t.name == "b" { 0.02 } else { 0.01 };
    o3.step_with(&mut r, &g, &table, &rate, 0.0).unwrap();
    assert!((r[0] - (1.0 - 0.01 - 0.01 * 0.1 * 1.0)).abs() < 1e-9);
    assert!((r[1] - (-2.0 + 0.01 + 0.01 * 0.1 * 2.0)).abs() < 1e-9);
    assert!((r[2] - (0.5 - 0.02)).abs() < 1e-9);
}

#[test]
fn corpus_split_and_batches_are_deterministic() {
    let text = "abcdefghij".repeat(100);
    let c = Corpus::from_text(&text, &Tokenizer::Bytes, 0.1, 16).unwrap();
    assert_eq!(c.train.len() + c.val.len(), 1000);
    assert_eq!(c.val.len(), 100);
    let (x, y) = c.train_batch(1, 5, 3, 16);
    assert_eq!((x.clone(), y.clone()), c.train_batch(1, 5, 3, 16));
    assert_ne!(x, c.train_batch(1, 6, 3, 16).0);
    for (a, b) in x.chunks(16).zip(y.chunks(16)) {
        assert_eq!(&a[1..], &b[..15]);
    }
    assert!(Corpus::from_text("short", &Tokenizer::Bytes, 0.1, 16).is_err());
    assert!(Corpus::from_text(&text, &Tokenizer::Bytes, 1.5, 16).is_err());
    assert_eq!(ByteTokenizer.decode(&ByteTokenizer.encode("Emma — é")), "Emma — é");
}

proptest! {
    #[test]
    fn induction_examples_have_one_answer_after_a_special_token(seed in 0u64..1000, n in 4usize..80) {
        let b = Task::Induction.generate(&mut seeded_rng(seed), 3, n);
        for (x, y) in b.tokens.chunks(n).zip(b.targets.chunks(n)) {
            prop_assert_eq!(x[n - 1], 16);
            prop_assert_eq!(x.iter().filter(|&&t| t == 16).count(), 2);
            let first = x.iter().position(|&t| t == 16).unwrap();
            prop_assert!(first < n - 2);
            prop_assert_eq!(y[n - 1], x[first + 1]);
            prop_assert!(y[..n - 1].iter().all(|&t| t == IGNORE));
        }
    }

    #[test]
    fn copying_examples_ask_for_the_colours_in_order(seed in 0u64..1000, n in 16usize..80) {
        let b = Task::Copying.generate(&mut seeded_rng(seed), 2, n);
        prop_assert_eq!(b.tokens.len(), 2 * n);
        for (x, y) in b.tokens.chunks(n).zip(b.targets.chunks(n)) {
            let colours: Vec<u32> = x[..n - COPY_COUNT].iter().cloned().filter(|&t| t != 0).collect();
            prop_assert_eq!(&colours[..], &y[n - COPY_COUNT..]);
            prop_assert!(x[n - COPY_COUNT..].iter().all(|&t| t == 9));
        }
    }
}

#[test]
fn exact_accuracy_needs_every_answer() {
    let b = Task::Copying.generate(&mut seeded_rng(1), 2, 20);
    let v = Task::Copying.vocab();
    let mut probs = vec![0.0f32; 2 * 20 * v];
    for (i, &y) in b.targets.iter().enumerate() {
        if y != IGNORE {
            probs[i * v + y as usize] = 1.0;
        }
    }
    assert_eq!(exact_accuracy(&probs, &b, v), 1.0);
    let last = (20 - 1) * v;
    probs[last..last + v].fill(0.0);
    probs[last + (b.targets[19] as usize % (v - 1)) + 1] = 1.0; // a wrong answer in example 0
    assert_eq!(exact_accuracy(&probs, &b, v), 0.5);
}
