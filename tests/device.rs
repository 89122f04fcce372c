//! Device selection: names, features, errors.

use xkern::{DType, Device, Error, Tensor};

#[test]
fn cpu_names_parse() {
    for name in ["cpu", "CPU", " cpu ", "cpu:1", "cpu:3"] {
        let dev = Device::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(dev.info().backend, "cpu");
    }
    assert_eq!(Device::parse("cpu:3").unwrap().info().threads, Some(3));
}

#[test]
fn unknown_names_list_the_valid_ones() {
    for name in ["gpu", "", "cpu:0", "cpu:x", "neuron-sim:trn3", "wgpu:0"] {
        match Device::parse(name) {
            Err(e @ Error::UnknownDevice { .. }) => {
                assert!(e.to_string().contains("neuron-sim:trn2"), "{e}")
            }
            other => panic!("{name}: expected UnknownDevice, got {other:?}"),
        }
    }
}

#[test]
fn backends_not_in_this_build_say_what_to_do() {
    let mut names = Vec::new();
    if !cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if !cfg!(feature = "neuron-sim") {
        names.extend(["neuron-sim", "neuron-sim:trn1", "NEURON-SIM:TRN2"]);
    }
    for name in names {
        match Device::parse(name) {
            Err(e @ Error::BackendUnavailable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("feature") || msg.contains("not implemented"),
                    "{msg}"
                );
            }
            other => panic!("{name}: expected BackendUnavailable, got {other:?}"),
        }
    }
}

/// With the `wgpu` feature, `wgpu` opens an adapter (CI installs lavapipe), is listed by
/// `Device::available()`, and computes through the facade.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_parses_and_is_available() {
    let dev = Device::parse("wgpu").unwrap_or_else(|e| {
        panic!("wgpu needs an adapter here (apt-get install mesa-vulkan-drivers libvulkan1): {e}")
    });
    assert_eq!(dev.info().backend, "wgpu");
    assert!(
        Device::available()
            .iter()
            .any(|d| d.info().backend == "wgpu")
    );
    let a = Tensor::from_slice(&dev, &[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let c = a.matmul(&a).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(c, vec![7.0, 10.0, 15.0, 22.0]);
}

#[test]
fn device_from_env() {
    // The only test in this binary that touches XKERN_DEVICE.
    // SAFETY: no other thread of this test binary reads or writes the environment.
    unsafe { std::env::remove_var("XKERN_DEVICE") };
    assert_eq!(Device::from_env().unwrap().info().backend, "cpu");
    unsafe { std::env::set_var("XKERN_DEVICE", "cpu:2") };
    assert_eq!(Device::from_env().unwrap().info().threads, Some(2));
    unsafe { std::env::set_var("XKERN_DEVICE", "tpu") };
    assert!(matches!(
        Device::from_env(),
        Err(Error::UnknownDevice { .. })
    ));
    unsafe { std::env::remove_var("XKERN_DEVICE") };
}

#[test]
fn tensors_of_two_cpu_devices_combine() {
    // CPU devices share host memory: a pool choice never makes tensors incompatible.
    let a = Tensor::randn(&Device::cpu(), &[4, 5], DType::F32, 1).unwrap();
    let b = Tensor::randn(&Device::parse("cpu:1").unwrap(), &[5, 2], DType::F32, 2).unwrap();
    assert_eq!(a.matmul(&b).unwrap().shape(), &[4, 2]);
}

#[test]
fn one_device_from_many_threads() {
    // Device is Send + Sync: eight threads share one device and check their results.
    let dev = Device::cpu();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let dev = dev.clone();
            s.spawn(move || {
                for i in 0..10 {
                    let a = Tensor::randn(&dev, &[33, 17], DType::F32, t * 100 + i).unwrap();
                    let b = Tensor::randn(&dev, &[17, 9], DType::F32, t * 100 + i + 1).unwrap();
                    let c = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
                    let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
                    for r in 0..33 {
                        for col in 0..9 {
                            let want: f64 = (0..17)
                                .map(|p| f64::from(av[r * 17 + p]) * f64::from(bv[p * 9 + col]))
                                .sum();
                            assert!((f64::from(c[r * 9 + col]) - want).abs() < 1e-4);
                        }
                    }
                    let s = a
                        .softmax(-1)
                        .unwrap()
                        .sum(-1, false)
                        .unwrap()
                        .to_vec::<f32>()
                        .unwrap();
                    assert!(s.iter().all(|x| (x - 1.0).abs() < 1e-5));
                }
            });
        }
    });
}

#[cfg(feature = "neuron-sim")]
#[test]
fn neuron_sim_devices_parse_run_and_report_costs() {
    for (name, label) in [
        ("neuron-sim", "neuron-sim:trn2"),
        ("neuron-sim:trn1", "neuron-sim:trn1"),
        ("NEURON-SIM:TRN2", "neuron-sim:trn2"),
        ("neuron-sim:trn2:timing", "neuron-sim:trn2:timing"),
    ] {
        let dev = Device::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(dev.name(), label);
    }
    for bad in ["neuron-sim:trn3", "neuron-sim:trn2:fast"] {
        assert!(
            matches!(Device::parse(bad), Err(Error::UnknownDevice { .. })),
            "{bad}"
        );
    }
    let names: Vec<String> = Device::available().iter().map(Device::name).collect();
    assert!(names.contains(&"neuron-sim:trn1".to_string()), "{names:?}");
    assert!(names.contains(&"neuron-sim:trn2".to_string()), "{names:?}");

    let dev = Device::neuron_sim(xkern::neuron_sim::NeuronConfig::trn2());
    assert!(dev.last_profile().is_none());
    let a = Tensor::from_slice(&dev, &[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let c = a.matmul(&a).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![7.0, 10.0, 15.0, 22.0]);
    let p = dev.last_profile().expect("a profile");
    assert_eq!(p.instruction_counts.get("matmul"), Some(&1));
    let _ = DType::F32;
}
