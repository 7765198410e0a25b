//! The command line is a public contract: every flag the README documents exists on its subcommand in both
//! spellings, and the command lines users have in their scripts (the README's, the demo's, Python clip-retrieval's
//! own `--flag=value` / `True|False` / kebab-case spellings) parse to the values they mean.

use clip_cli::{Cli, Command, Device, InputFormat, Modality};

fn parse(line: &str) -> Result<Command, String> {
    let argv = std::iter::once("clip-retrieval").chain(line.split_whitespace());
    Cli::try_parse_normalized(argv).map(|c| c.command).map_err(|e| format!("{line}: {e}"))
}

/// `(subcommand, flag)` for every `--flag` in the first column of the README's flag tables, by section.
fn readme_flags() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut section = String::new();
    let mut flags = Vec::new();
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("### `clip-retrieval ") {
            section = rest.trim_end_matches('`').to_string();
        } else if line.starts_with("| `--") && !section.is_empty() {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            for word in first_cell.split('`').filter(|w| w.starts_with("--")) {
                let flag = word.split_whitespace().next().unwrap().trim_start_matches("--");
                flags.push((section.clone(), flag.to_string()));
            }
        }
    }
    flags
}

#[test]
fn every_readme_flag_exists_in_both_spellings() {
    let flags = readme_flags();
    assert!(flags.len() >= 35, "the README's tables were found: {flags:?}");
    let root = clip_cli::command();
    for (sub, flag) in flags {
        let command = root.find_subcommand(&sub).unwrap_or_else(|| panic!("README section {sub} is no subcommand"));
        assert!(command.get_arguments().any(|a| a.get_long() == Some(flag.as_str())), "{sub} --{flag}");
        let kebab = format!("--{}", flag.replace('_', "-"));
        let argv = clip_cli::argv::normalize(["clip-retrieval", sub.as_str(), kebab.as_str()]);
        assert_eq!(argv[2].to_str().unwrap(), format!("--{flag}"), "{sub} {kebab}");
    }
}

#[test]
fn documented_and_python_command_lines_parse_to_what_they_mean() {
    // clip-retrieval's README spellings (Python fire): `--flag=value`, True/False, bare booleans.
    let Command::Inference(a) = parse(
        "inference --input_dataset=image_folder --output_folder=embeddings_folder --input_format=webdataset \
         --enable_text=False --enable_metadata=True --batch_size=8 --num_prepro_workers=2 --clip_model=m \
         --wds_image_key=jpg --wds_caption_key=txt --distribution_strategy=sequential --use_jit False",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (a.input_format, a.enable_text, a.enable_metadata, a.batch_size),
        (InputFormat::Webdataset, false, true, 8)
    );
    assert_eq!(a.model.clip_model.as_deref(), Some("m"));
    // Kebab-case, bare booleans, lists, devices and dtype aliases.
    let Command::Inference(a) = parse(
        "inference --input-dataset in --output-folder out --enable-metadata --partition-ids 1,3 --device cuda:1 \
         --embedding-dtype f32 --no-progress",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!((a.enable_metadata, a.partition_ids, a.model.device), (true, Some(vec![1, 3]), Device::Cuda(1)));
    assert!(a.no_progress);
    let Command::Index(i) = parse(
        "index --embeddings_folder e --index_folder i --max_index_memory_usage 16GB --current_memory_available 512m \
         --modalities image,text --metric IP --copy_metadata False",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!((i.max_index_memory_usage.bytes(), i.current_memory_available.bytes()), (16 << 30, 512 << 20));
    assert_eq!(i.modalities, [Modality::Image, Modality::Text]);
    assert!(!i.copy_metadata);
    // The README's own synopses and the demo's end2end line.
    for line in [
        "index_combiner --input_folders a,b,c --output_folder out",
        "index-combiner --input-folders a,b --output-folder out",
        "filter --query a_red_circle --indice_folder IDX --output_folder OUT --num_results 100 --threshold 0.3 \
         --modality text --query_type text --clip_model M --input_dataset D --input_format parquet",
        "sample-dataset --output_folder D --count 10 --seed 1 --start 5 --output_format webdataset --shard_size 1000",
        "sample_dataset --output_folder D",
        "back --indices_paths indices_paths.json --port 1234 --host 0.0.0.0 --enable_hdf5 True --use_arrow \
         --columns_to_return ['url','caption'] --max_body_size 20M --request_timeout 60",
        "back --indices-paths p.json --enable-faiss-memory-mapping True --provide_safety_model",
        "end2end --input_dataset D --input_format files --output_folder end2end --port 1234 --run_back True",
        "end2end --output_folder demo --sample_count 1000 --clip_model models/tiny-clip --host 127.0.0.1 --port 1234",
    ] {
        parse(line).unwrap();
    }
    // Values the parser must refuse, with the accepted ones in the message.
    for (line, needle) in [
        ("inference --input_dataset x --output_folder y --input_format csv", "webdataset"),
        ("inference --input_dataset x --output_folder y --enable_text maybe", "expected True or False"),
        ("index --embeddings_folder e --index_folder i --max_index_memory_usage lots", "4G, 512M"),
        ("index --embeddings_folder e --index_folder i --modalities image,audio", "image or text"),
        ("back --request_timeout 0", "positive number of seconds"),
        ("inference --input_dataset x --output_folder y --device tpu", "cpu, cuda or cuda:N"),
    ] {
        let e = parse(line).unwrap_err();
        assert!(e.contains(needle), "{e}");
    }
}
