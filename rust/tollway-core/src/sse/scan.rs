//! A strict JSON reader for the one shape read on nearly every stream event (an OpenAI chunk),
//! where serde_json's general parse is most of a stream's cost.
//!
//! It reads UTF-8 text (checked once by the caller): keys and strings without escapes come
//! back as slices of it, escaped strings are decoded, every other value is checked and
//! skipped. It accepts only JSON that serde_json accepts, and answers None for anything it
//! does not read itself (escaped keys, deep nesting, bad JSON alike): its caller then parses
//! with serde_json, which gives the answer (or the error).

use std::borrow::Cow;

/// Skipped values nest at most this deep (serde_json allows 128; deeper is left to it).
const MAX_DEPTH: u32 = 32;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The index of the first byte from `i` that ends a plain run of string text: a quote, a
/// backslash or a control character (which JSON forbids in strings), or `b.len()`.
#[inline(always)]
pub(crate) fn plain_run(b: &[u8], i: usize) -> usize {
    let Some(mut rest) = b.get(i..) else {
        return i;
    };
    // Eight bytes at a time (reading past the string's end is fine: they are the text's): a
    // byte is flagged when it is '"' or '\\' or below 0x20. The lowest flag is exact (a
    // false flag only ever sits above a true one).
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let v = u64::from_le_bytes(*word);
        let quote = v ^ (ONES * u64::from(b'"'));
        let slash = v ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (v.wrapping_sub(ONES * 0x20) & !v);
        let found = found & HIGHS;
        if found != 0 {
            return b.len() - rest.len() + (found.trailing_zeros() / 8) as usize;
        }
        rest = tail;
    }
    let plain = rest
        .iter()
        .take_while(|&&c| c != b'"' && c != b'\\' && c >= 0x20);
    b.len() - rest.len() + plain.count()
}

/// The index after the run of ASCII digits from `i`.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The index of `name` among `names` (for consts: a name not listed fails the build).
pub(crate) const fn index_of(names: &[&[u8]], name: &[u8]) -> usize {
    let mut k = 0;
    'names: while k < names.len() {
        let candidate = names[k];
        k += 1;
        if candidate.len() != name.len() {
            continue;
        }
        let mut i = 0;
        while i < name.len() {
            if candidate[i] != name[i] {
                continue 'names;
            }
            i += 1;
        }
        return k - 1;
    }
    panic!("a name not among the names")
}

/// A cursor over JSON text; every reader answers None where it gives up.
///
/// The common path is inlined into one function, where the cursor stays in registers; the
/// rare paths (whitespace, escapes, nested values, an unexpected key) take a copy and give
/// back the cursor after what they read, so that it never has to live in memory.
#[derive(Clone, Copy)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self::resume(text, 0)
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if c > b' ' {
            return Some(c);
        }
        self.i = self.past_space();
        self.b.get(self.i).copied()
    }

    /// The index of the next byte that is not whitespace (or the end).
    #[inline(never)]
    fn past_space(self) -> usize {
        let rest = self.b.get(self.i..).unwrap_or_default();
        let space = rest
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'));
        self.i + space.count()
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// True when only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// An object whose keys are looked for among `names` (what the caller reads, and the other
    /// keys it expects, in their usual order): `field` gets the index of each key's name, or
    /// None for another key, and reads or skips its value.
    #[inline(always)]
    pub(crate) fn fields<const N: usize>(
        &mut self,
        names: &[&[u8]; N],
        field: impl FnMut(&mut Self, Option<usize>) -> Option<()>,
    ) -> Option<()> {
        self.fields_from(None, names, field)
    }

    /// [`Self::fields`], or with `at_value` the rest of an object from the value of a key
    /// already read (the key's index among `names`, as `field` gets it).
    #[inline(always)]
    pub(crate) fn fields_from<const N: usize>(
        &mut self,
        at_value: Option<Option<usize>>,
        names: &[&[u8]; N],
        mut field: impl FnMut(&mut Self, Option<usize>) -> Option<()>,
    ) -> Option<()> {
        let mut pending = at_value;
        if pending.is_none() {
            self.eat(b'{')?;
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(());
            }
        }
        self.elements(b'}', |s| {
            let name = match pending.take() {
                Some(name) => name,
                None => s.key_among(names)?,
            };
            field(s, name)
        })
    }

    /// An object: `field` reads its key and value, for each in order.
    #[inline(always)]
    fn object(&mut self, field: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', field)
    }

    /// An array: `item` reads each element, in order.
    #[inline(always)]
    pub(crate) fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', item)
    }

    /// `open`, then what `each` reads, comma-separated (none at all too), then `close`.
    #[inline(always)]
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        each: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        self.elements(close, each)
    }

    /// Elements from the cursor (one is due), what `each` reads, comma-separated, then `close`.
    #[inline(always)]
    fn elements(&mut self, close: u8, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        loop {
            each(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Where the cursor is (a byte index into the text).
    pub(crate) fn at(&self) -> usize {
        self.i
    }

    /// A cursor at `i` (a byte index), as after reading the text before it.
    pub(crate) fn resume(text: &'a str, i: usize) -> Self {
        Scanner {
            text,
            b: text.as_bytes(),
            i,
        }
    }

    /// `null` as None, else what `read` reads.
    #[inline(always)]
    pub(crate) fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// Exactly `null`.
    #[inline(always)]
    pub(crate) fn null(&mut self) -> Option<()> {
        self.peek()?;
        self.literal(b"null")
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A key and its colon: the index of its name among `names`, None for another key.
    #[inline(always)]
    fn key_among<const N: usize>(&mut self, names: &[&[u8]; N]) -> Option<Option<usize>> {
        if self.peek()? != b'"' {
            return None;
        }
        // The usual case, `name":` compared as it stands (a quote after a name's last letter
        // ends the key: no escape).
        let start = self.i + 1;
        let rest = self.b.get(start..)?;
        let first = rest.first();
        for (k, name) in names.iter().enumerate() {
            // The first letter first: one comparison for most names.
            if first == name.first()
                && rest.starts_with(name)
                && rest.get(name.len()..name.len() + 2) == Some(b"\":")
            {
                self.i = start + name.len() + 2;
                return Some(Some(k));
            }
        }
        let (after, key) = self.key()?;
        *self = after;
        Some(names.iter().position(|name| *name == key))
    }

    /// A key without escapes (an escaped key is left to serde_json), and its colon: the
    /// cursor after them, and the key.
    #[inline(never)]
    fn key(mut self) -> Option<(Self, &'a [u8])> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = plain_run(self.b, start);
        if self.b.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        self.eat(b':')?;
        Some((self, self.b.get(start..end)?))
    }

    /// A string or `null` (one look at the next byte for both). Out of line: read at several
    /// places, it would crowd the registers of the one function the rest is inlined into.
    #[inline(never)]
    pub(crate) fn string_or_null(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'"' => self.string_here().map(Some),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A string (borrowed from the text when it has no escapes, else decoded), its opening
    /// quote the next byte.
    #[inline(always)]
    fn string_here(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i + 1;
        let end = plain_run(self.b, start);
        let plain = self.text.get(start..end)?;
        self.i = end;
        match self.b.get(end)? {
            b'"' => {
                self.i += 1;
                Some(Cow::Borrowed(plain))
            }
            b'\\' => {
                let (after, text) = self.unescape(plain)?;
                *self = after;
                Some(Cow::Owned(text))
            }
            _ => None,
        }
    }

    /// The rest of a string from an escape, after its `plain` start, decoded through its
    /// closing quote: the cursor after it, and the text.
    #[cold]
    #[inline(never)]
    fn unescape(mut self, plain: &str) -> Option<(Self, String)> {
        let mut out = String::with_capacity(plain.len() + 8);
        out.push_str(plain);
        let b = self.b;
        loop {
            match b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((self, out));
                }
                b'\\' => {}
                _ => return None,
            }
            let c = *b.get(self.i + 1)?;
            self.i += 2;
            out.push(match c {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode()?,
                _ => return None,
            });
            let end = plain_run(b, self.i);
            out.push_str(self.text.get(self.i..end)?);
            self.i = end;
        }
    }

    /// Four hex digits.
    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for &d in self.b.get(self.i..self.i + 4)? {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }

    /// The character of a `\u` escape (after the `u`): a surrogate must come paired.
    fn unicode(&mut self) -> Option<char> {
        let n = self.hex4()?;
        if !(0xD800..0xDC00).contains(&n) {
            return char::from_u32(n); // None for a lone trailing surrogate
        }
        let rest = self.b.get(self.i..self.i + 2)?;
        if rest != b"\\u" {
            return None;
        }
        self.i += 2;
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        char::from_u32(0x1_0000 + ((n - 0xD800) << 10) + (low - 0xDC00))
    }

    /// Any value, checked as serde_json checks what it skips, not kept.
    #[inline(always)]
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    #[inline(always)]
    fn skip_at(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                *self = self.skip_nested(depth)?;
                Some(())
            }
        }
    }

    /// An object or array, skipped: the cursor after it (nested values recurse, so this is
    /// kept out of line).
    #[inline(never)]
    fn skip_nested(mut self, depth: u32) -> Option<Self> {
        self.skip_container(depth)?;
        Some(self)
    }

    fn skip_container(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'{' if depth < MAX_DEPTH => self.object(|s| {
                *s = s.key()?.0;
                s.skip_at(depth + 1)
            }),
            b'[' if depth < MAX_DEPTH => self.array(|s| s.skip_at(depth + 1)),
            _ => None,
        }
    }

    #[inline(always)]
    fn skip_string(&mut self) -> Option<()> {
        let b = self.b;
        self.i += 1;
        loop {
            self.i = plain_run(b, self.i);
            match b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {}
                _ => return None,
            }
            let c = *b.get(self.i + 1)?;
            self.i += 2;
            match c {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    self.hex4()?;
                }
                _ => return None,
            }
        }
    }

    /// A number by JSON's grammar: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(b, i + 1),
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(b, i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(b, i);
            if end == i {
                return None;
            }
            i = end;
        }
        self.i = i;
        Some(())
    }
}
