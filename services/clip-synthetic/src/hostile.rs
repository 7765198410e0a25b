//! Hostile images as a crawler or an attacker hands them over: a real PNG of any size (a decompression bomb) built
//! without holding its pixels, and real images of absurd aspect ratio. Used by clip-model's unit tests and the fault
//! suite (`tests/tests/faults.rs`).

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let body: Vec<u8> = kind.iter().chain(data).copied().collect();
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// A real, valid greyscale PNG of `width x height` black pixels, built without ever holding its pixels: the rows
/// (a filter byte and `width` zeros each) are one deflate block of 258-byte repeats at 2 bits each, as zlib writes
/// long runs: a 40000 x 40000 one is ~1.6 MB, like the bombs found in crawls.
pub fn zero_png(width: u32, height: u32) -> Vec<u8> {
    let row = width as usize + 1;
    let total = row as u64 * height as u64;
    let mut deflated = Vec::new();
    let mut encoder = ZeroDeflater::default();
    encoder.zeros(total, &mut deflated);
    encoder.finish(&mut deflated);
    let mut zlib = vec![0x78, 0x01];
    zlib.extend(deflated);
    // Adler-32 of `total` zero bytes: a = 1, b = total mod 65521.
    let b = (total % 65521) as u32;
    zlib.extend(((b << 16) | 1).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    for part in zlib.chunks(1 << 20) {
        chunk(&mut png, b"IDAT", part);
    }
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Writes one dynamic-Huffman deflate block of zeros: a literal 0, then 258-byte repeats at distance 1 coded in
/// 2 bits each (as zlib does for long runs), then literals for the rest.
#[derive(Default)]
struct ZeroDeflater {
    bits: u64,
    nbits: u32,
}

impl ZeroDeflater {
    /// Puts `n` bits of `value`, least significant first (header fields and extra bits).
    fn put(&mut self, value: u64, n: u32, out: &mut Vec<u8>) {
        self.bits |= value << self.nbits;
        self.nbits += n;
        while self.nbits >= 8 {
            out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }

    /// Puts a Huffman code, most significant bit first.
    fn code(&mut self, code: u32, len: u32, out: &mut Vec<u8>) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed as u64, len, out);
    }

    fn zeros(&mut self, n: u64, out: &mut Vec<u8>) {
        self.put(1, 1, out); // BFINAL
        self.put(2, 2, out); // BTYPE = dynamic Huffman
        self.put(29, 5, out); // HLIT: literal/length codes 0..=285
        self.put(0, 5, out); // HDIST: one distance code
        self.put(14, 4, out); // HCLEN: 18 code-length codes, in the standard order below
                              // Code-length code lengths in the order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1: 18 -> 1 bit,
                              // 2 -> 2 bits, 1 -> 2 bits; so 18 = `0`, 1 = `10`, 2 = `11`.
        for len in [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
            self.put(len, 3, out);
        }
        // Literal/length lengths: 0 -> 2, 1..=255 -> 0, 256 -> 2, 257..=284 -> 0, 285 -> 1; distance 0 -> 1.
        let two = |d: &mut Self, out: &mut Vec<u8>| d.code(0b11, 2, out);
        let one = |d: &mut Self, out: &mut Vec<u8>| d.code(0b10, 2, out);
        let zero_run = |d: &mut Self, count: u64, out: &mut Vec<u8>| {
            d.code(0, 1, out);
            d.put(count - 11, 7, out);
        };
        two(self, out);
        zero_run(self, 138, out);
        zero_run(self, 117, out);
        two(self, out);
        zero_run(self, 28, out);
        one(self, out);
        one(self, out);
        // Codes: length 258 (285) = `0`, literal 0 = `10`, end of block (256) = `11`; distance 1 = `0`.
        let mut left = n;
        if left > 0 {
            self.code(0b10, 2, out);
            left -= 1;
        }
        while left >= 258 {
            self.code(0, 1, out);
            self.code(0, 1, out);
            left -= 258;
        }
        for _ in 0..left {
            self.code(0b10, 2, out);
        }
        self.code(0b11, 2, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.nbits > 0 {
            out.push(self.bits as u8);
            self.bits = 0;
            self.nbits = 0;
        }
    }
}

/// A real `width x height` greyscale PNG of a gradient, encoded by the image crate (for sizes that fit in memory).
pub fn gradient_png(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(width, height, |x, y| image::Luma([((x + y) % 251) as u8]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
    png
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_pngs_decode_to_the_size_their_header_says() {
        for (w, h) in [(1, 1), (3, 700), (300, 2), (1000, 1000), (257, 1)] {
            let img = image::load_from_memory(&super::zero_png(w, h)).expect("a valid PNG");
            assert_eq!((img.width(), img.height()), (w, h));
            assert!(img.to_luma8().iter().all(|&v| v == 0));
        }
        let bomb = super::zero_png(40_000, 40_000).len();
        assert!((1_500_000..1_700_000).contains(&bomb), "{bomb} bytes");
    }
}
