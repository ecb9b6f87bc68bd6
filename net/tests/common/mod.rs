//! Shared by the net crate's test files.

#[allow(dead_code)] // Only the WebSocket test files use it.
pub mod ws_client;

/// SplitMix64: a tiny deterministic PRNG, so generated and fuzzed cases reproduce from a seed.
pub struct Rng(pub u64);

#[allow(dead_code)] // Each test file uses its own subset.
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One HTTP response as the test clients read it.
#[derive(Debug)]
#[allow(dead_code)] // Not every test file that shares this module reads responses.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[allow(dead_code)] // Each test file uses its own subset.
impl Resp {
    /// Parses a response head (status line and `name: value` lines, CRLF-separated); the body
    /// is left for the caller to read.
    pub fn from_head(head: &str) -> Resp {
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        Resp {
            status,
            headers,
            body: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> usize {
        self.header("content-length")
            .map_or(0, |v| v.parse().unwrap())
    }

    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}
