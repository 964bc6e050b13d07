//! Arbitrary bytes as the body of a review, in every mode: the handler always answers with an
//! AdmissionReview that serializes, and never panics. Registry lookups are refused by the
//! network guard before any connection (see `layerlink_fuzz::HARNESS`).
#![no_main]

use layerlink::admission::{self, Edges};
use layerlink_fuzz::{HARNESS, api_timeout, check_response, mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let harness = &*HARNESS;
    // The body is the whole input (so seeds are plain reviews); its length picks the engine and
    // the API server's timeout.
    let engine = harness.plain(data.len() as u8);
    let timeout = api_timeout((data.len() / 2) as u8);
    for m in 0..3 {
        let mode = mode(m);
        let response = harness.runtime.block_on(admission::handle(engine, &Edges::default(), mode, data, timeout));
        check_response(&response, mode);
    }
});
