//! How many pages a PDF holds, counted so that a tenant cannot hide pages
//! from the hold: the upstream bills every page (text and an image of it),
//! so a count that comes out low lets a document through for a fraction of
//! what it costs.
//!
//! Pages are page objects (`/Type /Page`) and page-tree totals (`/Count`),
//! whichever is higher, found
//! - after undoing `#xx` escapes in names (`/P#61ge` is `/Page`), and
//! - inside every Flate-compressed stream as well as the file's plain text,
//!   since PDF 1.5 object streams hold objects (pages included) compressed.
//!
//! What cannot be read the way a PDF reader would read it is
//! [`Pages::Unknown`], and the caller then reserves the worst case: a stream
//! under a filter other than Flate (LZW, ASCII85, ASCIIHex, RunLength,
//! Crypt, an abbreviation), filter or parameters given by reference, a
//! predictor outside a cross-reference stream (it scrambles what it
//! decodes), a Flate stream that does not inflate (truncated, encrypted),
//! or more than [`MAX_INFLATED`] bytes inflated in all.
use miniz_oxide::inflate::decompress_to_vec_zlib_with_limit;

/// Inflated bytes read per document at most (a compression bomb stops here).
pub const MAX_INFLATED: usize = 64 << 20;

/// A PDF's page count as an upstream would see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// Every stream that can hold objects was read.
    Counted(i64),
    /// Something that may hold pages could not be read: assume the worst.
    Unknown,
}

/// Counts `pdf`'s pages (see the module docs).
#[must_use]
pub fn pages(pdf: &[u8]) -> Pages {
    let pdf = unescape_names(pdf);
    // The plain text includes unfiltered streams; filtered ones are read below.
    let mut seen = Seen::default();
    seen.read(&pdf);
    let mut budget = MAX_INFLATED;
    let mut at = 0;
    while let Some(stream) = next_stream(&pdf, at) {
        at = stream.end;
        let dict = &pdf[stream.dict_start..stream.keyword];
        let data = &pdf[stream.data_start..stream.end];
        match filter_of(dict) {
            Filter::None => {}
            Filter::Flate => {
                let Ok(inflated) = decompress_to_vec_zlib_with_limit(data, budget) else { return Pages::Unknown };
                budget -= inflated.len();
                seen.read(&unescape_names(&inflated));
            }
            Filter::Other => return Pages::Unknown,
        }
    }
    Pages::Counted(seen.objects.max(seen.largest_count))
}

/// Page objects found so far and the largest page-tree `/Count` (an
/// outline's count can only raise the estimate).
#[derive(Default)]
struct Seen {
    objects: i64,
    largest_count: i64,
}

impl Seen {
    fn read(&mut self, text: &[u8]) {
        self.objects = self.objects.saturating_add(page_objects(text));
        self.largest_count = self.largest_count.max(largest_count(text));
    }
}

/// One `stream ... endstream`: its dictionary starts at `dict_start` (the
/// object's `obj` keyword), `keyword` is where `stream` begins, the data
/// runs from `data_start` to `end` (the `endstream` keyword).
struct Stream {
    dict_start: usize,
    keyword: usize,
    data_start: usize,
    end: usize,
}

/// How far back from `stream` its dictionary is looked for.
const DICT_WINDOW: usize = 4096;

fn next_stream(pdf: &[u8], from: usize) -> Option<Stream> {
    let mut i = from;
    loop {
        let keyword = i + find(&pdf[i..], b"stream")?;
        i = keyword + b"stream".len();
        if keyword >= 3 && &pdf[keyword - 3..keyword] == b"end" {
            continue;
        }
        let data_start = match &pdf[i..] {
            [b'\r', b'\n', ..] => i + 2,
            [b'\n' | b'\r', ..] => i + 1,
            _ => continue,
        };
        let window = keyword.saturating_sub(DICT_WINDOW);
        let dict_start = rfind(&pdf[window..keyword], b"obj").map_or(window, |o| window + o);
        let end = find(&pdf[data_start..], b"endstream").map_or(pdf.len(), |e| data_start + e);
        return Some(Stream { dict_start, keyword, data_start, end });
    }
}

enum Filter {
    None,
    Flate,
    Other,
}

/// The filter chain of a stream dictionary, as far as counting goes.
fn filter_of(dict: &[u8]) -> Filter {
    if let Some(at) = find(dict, b"/DecodeParms") {
        // Parameters by reference cannot be read here; a predictor scrambles
        // the inflated bytes, harmless only in a cross-reference stream.
        let value = skip_space(&dict[at + b"/DecodeParms".len()..]);
        if !value.starts_with(b"<<") && !value.starts_with(b"[") && !value.starts_with(b"null") {
            return Filter::Other;
        }
        if contains(dict, b"/Predictor") && !is_name(dict, b"/Type", b"/XRef") {
            return Filter::Other;
        }
    }
    let Some(at) = find(dict, b"/Filter") else { return Filter::None };
    let value = skip_space(&dict[at + b"/Filter".len()..]);
    let names: Vec<&[u8]> = if let Some(list) = value.strip_prefix(b"[") {
        let Some(close) = list.iter().position(|b| *b == b']') else { return Filter::Other };
        let list = &list[..close];
        let names = split_names(list);
        if names.is_none() {
            return Filter::Other;
        }
        names.unwrap_or_default()
    } else if value.starts_with(b"/") {
        vec![first_name(value)]
    } else {
        // A reference (`7 0 R`): the filter is elsewhere.
        return Filter::Other;
    };
    match names.as_slice() {
        [] => Filter::None,
        [one] if *one == b"/FlateDecode" => Filter::Flate,
        _ => Filter::Other,
    }
}

/// The names of an array body (`/A /B`), or None when it holds anything else.
fn split_names(list: &[u8]) -> Option<Vec<&[u8]>> {
    let mut names = Vec::new();
    let mut rest = skip_space(list);
    while !rest.is_empty() {
        if !rest.starts_with(b"/") {
            return None;
        }
        let name = first_name(rest);
        names.push(name);
        rest = skip_space(&rest[name.len()..]);
    }
    Some(names)
}

/// The name at the start of `s` (which starts with `/`).
fn first_name(s: &[u8]) -> &[u8] {
    let len = 1 + s[1..].iter().take_while(|b| is_regular(**b)).count();
    &s[..len]
}

/// What follows each `key` in `text`, blanks skipped: the key's value and
/// everything after it.
fn values<'a>(text: &'a [u8], key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        let after = i + find(&text[i..], key)? + key.len();
        i = after;
        Some(skip_space(&text[after..]))
    })
}

/// Whether `v` starts with the name `name` (not a longer one).
fn starts_with_name(v: &[u8], name: &[u8]) -> bool {
    v.starts_with(name) && v.get(name.len()).is_none_or(|b| !is_regular(*b))
}

/// Whether `dict` has `key` followed by the name `value`.
fn is_name(dict: &[u8], key: &[u8], value: &[u8]) -> bool {
    values(dict, key).any(|v| starts_with_name(v, value))
}

/// Page objects: `/Type /Page` (any whitespace between) not followed by
/// more name characters (so not `/Pages`, `/PageLabel`).
fn page_objects(pdf: &[u8]) -> i64 {
    values(pdf, b"/Type").filter(|v| starts_with_name(v, b"/Page")).fold(0, |n, _| n + 1)
}

/// The largest integer after a `/Count` key.
fn largest_count(pdf: &[u8]) -> i64 {
    values(pdf, b"/Count")
        .filter_map(|v| {
            let digits = v.iter().take(12).take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&v[..digits]).ok()?.parse::<i64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// `pdf` with every `#xx` escape inside a name replaced by its byte.
fn unescape_names(pdf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdf.len());
    let mut in_name = false;
    let mut i = 0;
    while i < pdf.len() {
        let b = pdf[i];
        if b == b'/' {
            in_name = true;
        } else if !is_regular(b) {
            in_name = false;
        } else if in_name
            && b == b'#'
            && let Some(byte) =
                pdf.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| is_space(**b)).count();
    &s[n..]
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'\0')
}

fn is_regular(b: u8) -> bool {
    !is_space(b) && !matches!(b, b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use miniz_oxide::deflate::compress_to_vec_zlib;

    use super::*;

    /// A PDF whose `n` page objects are plain text.
    fn plain(n: usize) -> Vec<u8> {
        let mut p = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n".to_vec();
        p.extend_from_slice(format!("2 0 obj << /Type /Pages /Count {n} >> endobj\n").as_bytes());
        for i in 0..n {
            p.extend_from_slice(format!("{} 0 obj << /Type /Page /Parent 2 0 R >> endobj\n", i + 3).as_bytes());
        }
        p.extend_from_slice(b"%%EOF\n");
        p
    }

    /// A PDF 1.5 whose `n` pages (and the page tree) sit in one object
    /// stream under `filter`, with names escaped when `escape`.
    fn packed(n: usize, filter: &str, escape: bool) -> Vec<u8> {
        let page = if escape { "/Ty#70e /P#61ge" } else { "/Type /Page" };
        let mut objects = String::from("<< /Type /Pages /Kids [] >> ");
        for _ in 0..n {
            objects.push_str(&format!("<< {page} /Parent 2 0 R >> "));
        }
        let data = if filter.contains("FlateDecode") {
            compress_to_vec_zlib(objects.as_bytes(), 6)
        } else {
            objects.into_bytes()
        };
        let mut p = b"%PDF-1.5\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n".to_vec();
        let kind = if escape { "/Obj#53tm" } else { "/ObjStm" };
        p.extend_from_slice(
            format!("9 0 obj << /Type {kind} /N {n} /First 10 {filter} /Length {} >>\nstream\r\n", data.len())
                .as_bytes(),
        );
        p.extend_from_slice(&data);
        p.extend_from_slice(b"\r\nendstream\nendobj\n%%EOF\n");
        p
    }

    #[test]
    fn plain_pages_and_the_page_tree_count() {
        assert_eq!(pages(&plain(0)), Pages::Counted(0));
        assert_eq!(pages(&plain(5)), Pages::Counted(5));
        assert_eq!(pages(b"/Type /Page"), Pages::Counted(1));
        assert_eq!(pages(b"/Type /Pages /Type /PageLabel /Type /Page%x"), Pages::Counted(1));
        // A page tree claiming more pages than objects are found: the tree wins.
        assert_eq!(pages(b"<< /Type /Pages /Count 40 >> << /Type /Page >>"), Pages::Counted(40));
    }

    /// Audit (session 16): 100 pages in a Flate object stream were held as
    /// about 560 input tokens (the decoded size over 3); escaped names
    /// (`/P#61ge`) were not pages at all.
    #[test]
    fn pages_in_object_streams_and_escaped_names_are_counted() {
        for (filter, escape) in [("/Filter /FlateDecode", false), ("/Filter [/FlateDecode]", true), ("", false)] {
            assert_eq!(pages(&packed(100, filter, escape)), Pages::Counted(100), "{filter} {escape}");
        }
        assert_eq!(pages(b"<< /Ty#70e /P#61ge >> << /Type /Pag#65s >>"), Pages::Counted(1));
    }

    #[test]
    fn what_a_reader_could_decode_but_this_cannot_is_unknown() {
        for filter in [
            "/Filter /LZWDecode",
            "/Filter /ASCII85Decode",
            "/Filter [/ASCIIHexDecode /FlateDecode]",
            "/Filter /Fl",
            "/Filter 7 0 R",
            "/Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 4 >>",
            "/Filter /FlateDecode /DecodeParms 8 0 R",
        ] {
            assert_eq!(pages(&packed(3, filter, false)), Pages::Unknown, "{filter}");
        }
        // A truncated (or encrypted) Flate stream.
        let mut cut = packed(3, "/Filter /FlateDecode", false);
        let at = find(&cut, b"\r\nendstream").unwrap();
        cut.drain(at - 8..at);
        assert_eq!(pages(&cut), Pages::Unknown);
        // A cross-reference stream's predictor is harmless.
        let xref =
            b"5 0 obj << /Type /XRef /Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 4 >> >>\nstream\n";
        let mut doc = xref.to_vec();
        doc.extend_from_slice(&compress_to_vec_zlib(&[2, 0, 0, 0, 1], 6));
        doc.extend_from_slice(b"\nendstream\n<< /Type /Page >>");
        assert_eq!(pages(&doc), Pages::Counted(1));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_budget() {
        let bomb = compress_to_vec_zlib(&vec![b' '; MAX_INFLATED + 1], 9);
        let mut doc = b"9 0 obj << /Filter /FlateDecode >>\nstream\n".to_vec();
        doc.extend_from_slice(&bomb);
        doc.extend_from_slice(b"\nendstream");
        assert_eq!(pages(&doc), Pages::Unknown);
    }
}
