//! Uploads above the multipart threshold go in parts (a single PUT is refused above 5 GiB by S3), against the real
//! S3 server; alone in its test binary because it sets the AWS environment of its own process.

use clip_data::storage::s3::{S3Config, MIN_PART_SIZE};
use clip_data::{Location, Storage};
use clip_retrieval_tests::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
use std::io::Write;

#[test]
fn an_object_over_the_threshold_is_uploaded_in_parts_and_reads_back_whole() {
    let s3 = S3Server::start(&["data"]);
    // SAFETY of set_var: the only test of this binary, before any thread reads the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::remove_var("AWS_PROFILE");
    let config = S3Config {
        multipart_threshold: MIN_PART_SIZE,
        part_size: MIN_PART_SIZE,
        ..S3Config::new(Some(s3.endpoint.clone()), true)
    };
    let storage = Storage::with_s3(config);
    // 10 MiB and a bit: two parts of 5 MiB (the minimum) and a short last one.
    let size = 2 * MIN_PART_SIZE as usize + 1234;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let target = Location::parse("s3://data/big/object.bin");
    let mut out = storage.create(&target).unwrap();
    out.file().write_all(&bytes).unwrap();
    out.commit().unwrap();
    let stored = std::fs::read(s3.root.path().join("data/big/object.bin")).unwrap();
    assert!(stored == bytes, "the stored object differs ({} bytes stored, {size} sent)", stored.len());
    assert!(storage.read(&target).unwrap() == bytes);
    // Below the threshold: one PUT, as before.
    storage.write(&Location::parse("s3://data/small.bin"), b"small").unwrap();
    assert_eq!(std::fs::read(s3.root.path().join("data/small.bin")).unwrap(), b"small");
}
