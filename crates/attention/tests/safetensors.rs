//! Parameters round-trip through safetensors files; bad files get typed errors and change
//! nothing.

use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, PolySketchConfig, SketchKind,
    load_safetensors, save_safetensors,
};

fn layer<T: polysketch_core::Scalar>(seed: u64) -> Attention<T> {
    Attention::new(AttentionConfig {
        heads: 2,
        head_dim: 4,
        kind: AttentionKind::PolySketch(PolySketchConfig {
            r: 3,
            block: 4,
            sketch: SketchKind::Learned,
            seed,
            ..Default::default()
        }),
        qk_norm: Default::default(),
        causal: true,
    })
    .unwrap()
}

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("polysketch-safetensors-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn parameters_round_trip_in_f32_and_f64() {
    let path = dir().join("a.safetensors");
    let a = layer::<f64>(1);
    save_safetensors(&path, &a.parameters()).unwrap();
    let mut b = layer::<f64>(2);
    assert_ne!(a.parameters(), b.parameters());
    load_safetensors(&path, &mut b.parameters_mut()).unwrap();
    assert_eq!(a.parameters(), b.parameters());
    // an f64 file loads into an f32 layer (rounded), and back
    let mut c = layer::<f32>(3);
    load_safetensors(&path, &mut c.parameters_mut()).unwrap();
    for (p, q) in a.parameters().iter().zip(c.parameters()) {
        assert!(p.data.iter().zip(q.data).all(|(x, y)| (*x as f32) == *y), "{}", p.name);
    }
    let path32 = dir().join("b.safetensors");
    save_safetensors(&path32, &c.parameters()).unwrap();
    let mut d = layer::<f32>(4);
    load_safetensors(&path32, &mut d.parameters_mut()).unwrap();
    assert_eq!(c.parameters(), d.parameters());
}

#[test]
fn bad_files_get_typed_errors_and_change_nothing() {
    let d = dir();
    let mut target = layer::<f32>(5);
    let before: Vec<Vec<f32>> = target.parameters().iter().map(|p| p.data.to_vec()).collect();
    let unchanged = |t: &Attention<f32>| {
        let now: Vec<Vec<f32>> = t.parameters().iter().map(|p| p.data.to_vec()).collect();
        assert_eq!(now, before);
    };
    // missing file, not safetensors, truncated
    let garbage = d.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let good = d.join("good.safetensors");
    save_safetensors(&good, &layer::<f32>(6).parameters()).unwrap();
    let truncated = d.join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for path in [d.join("missing.safetensors"), garbage, truncated] {
        let err = load_safetensors(&path, &mut target.parameters_mut()).unwrap_err();
        assert!(matches!(err, AttentionError::File { .. }), "{}: {err}", path.display());
        unchanged(&target);
    }
    // a file of another model: other shapes (r = 4), or missing names (a softmax layer)
    let other = Attention::<f32>::new(AttentionConfig {
        heads: 2,
        head_dim: 4,
        kind: AttentionKind::PolySketch(PolySketchConfig {
            r: 4,
            block: 4,
            sketch: SketchKind::Learned,
            ..Default::default()
        }),
        qk_norm: Default::default(),
        causal: true,
    })
    .unwrap();
    let wrong = d.join("wrong.safetensors");
    save_safetensors(&wrong, &other.parameters()).unwrap();
    assert!(matches!(
        load_safetensors(&wrong, &mut target.parameters_mut()),
        Err(AttentionError::File { .. })
    ));
    let empty = d.join("empty.safetensors");
    save_safetensors::<f32>(&empty, &[]).unwrap();
    assert!(matches!(
        load_safetensors(&empty, &mut target.parameters_mut()),
        Err(AttentionError::File { .. })
    ));
    unchanged(&target);
    // non-finite parameters are not written
    let mut bad = layer::<f32>(7);
    bad.parameters_mut()[0].data[1] = f32::NAN;
    let nan = d.join("nan.safetensors");
    assert!(matches!(
        save_safetensors(&nan, &bad.parameters()),
        Err(AttentionError::NonFiniteParameter { .. })
    ));
    assert!(!nan.exists());
}

/// A learned layer's file read by a random-sketch layer of the same sizes: its `ln.*` tensors
/// fit, but the networks' tensors would be silently dropped. Refused, naming them.
#[test]
fn tensors_the_layer_does_not_have_are_refused() {
    let path = dir().join("learned.safetensors");
    save_safetensors(&path, &layer::<f32>(1).parameters()).unwrap();
    let mut random = Attention::<f32>::new(AttentionConfig {
        heads: 2,
        head_dim: 4,
        kind: AttentionKind::PolySketch(PolySketchConfig { r: 3, block: 4, ..Default::default() }),
        qk_norm: Default::default(),
        causal: true,
    })
    .unwrap();
    let err = load_safetensors(&path, &mut random.parameters_mut()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AttentionError::File { .. }), "{message}");
    assert!(message.contains("the model does not have (sketch.node0"), "{message}");
    assert!(random.parameters()[0].data.iter().all(|&g| g == 1.0), "nothing loaded");
}
