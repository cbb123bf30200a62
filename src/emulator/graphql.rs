//! A small GraphQL executor front for the Railway emulator: parses one
//! operation (query or mutation, variables, aliases, nested selections,
//! arguments of every literal kind) and projects resolved JSON onto the
//! requested selection, so answers carry exactly the fields asked for.
//!
//! Fragments and directives are not supported (Railway's own CLI and our
//! client do not send them); they are answered with a GraphQL error.
use serde_json::{Map, Value};

/// An argument value as written in the document.
#[derive(Clone, Debug, PartialEq)]
pub enum GValue {
    Var(String),
    Literal(Value),
    List(Vec<GValue>),
    Object(Vec<(String, GValue)>),
}

impl GValue {
    /// The JSON value with variables substituted (missing variables are null).
    #[must_use]
    pub fn resolve(&self, vars: &Value) -> Value {
        match self {
            Self::Var(v) => vars.get(v).cloned().unwrap_or(Value::Null),
            Self::Literal(v) => v.clone(),
            Self::List(items) => Value::Array(items.iter().map(|i| i.resolve(vars)).collect()),
            Self::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.resolve(vars))).collect()),
        }
    }
}

/// One selected field.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub alias: Option<String>,
    pub name: String,
    pub args: Vec<(String, GValue)>,
    pub selection: Vec<Field>,
}

impl Field {
    /// The key of this field in the answer.
    #[must_use]
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// The resolved arguments as one JSON object.
    #[must_use]
    pub fn arguments(&self, vars: &Value) -> Value {
        Value::Object(self.args.iter().map(|(k, v)| (k.clone(), v.resolve(vars))).collect())
    }
}

/// A parsed operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub mutation: bool,
    pub fields: Vec<Field>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Punct(char),
    Spread,
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' | '}' | '(' | ')' | ':' | '[' | ']' | '!' | '$' | '=' | '@' | '|' | '&' => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            '.' => {
                if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
                    out.push(Tok::Spread);
                    i += 3;
                } else {
                    return Err("unexpected '.'".into());
                }
            }
            '"' => {
                if chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'"') {
                    let start = i + 3;
                    let mut j = start;
                    while j + 2 < chars.len() && !(chars[j] == '"' && chars[j + 1] == '"' && chars[j + 2] == '"') {
                        j += 1;
                    }
                    if j + 2 >= chars.len() {
                        return Err("unterminated block string".into());
                    }
                    out.push(Tok::Str(chars[start..j].iter().collect::<String>().trim().to_string()));
                    i = j + 3;
                    continue;
                }
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else { return Err("unterminated string".into()) };
                    i += 1;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else { return Err("bad escape".into()) };
                            i += 1;
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'u' => {
                                    let hex: String = chars.get(i..i + 4).ok_or("bad \\u escape")?.iter().collect();
                                    let cp = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                                    s.push(char::from_u32(cp).ok_or("bad \\u escape")?);
                                    i += 4;
                                }
                                other => s.push(other),
                            }
                        }
                        other => s.push(other),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if let Ok(n) = text.parse::<i64>() {
                    out.push(Tok::Int(n));
                } else {
                    out.push(Tok::Float(text.parse::<f64>().map_err(|e| format!("bad number {text}: {e}"))?));
                }
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                out.push(Tok::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Result<Tok, String> {
        let t = self.toks.get(self.pos).cloned().ok_or("unexpected end of document")?;
        self.pos += 1;
        Ok(t)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected '{c}', found {:?}", self.peek())) }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Name(n) => Ok(n),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    /// Skips a balanced group starting at the current opening punctuator.
    fn skip_group(&mut self, open: char, close: char) -> Result<(), String> {
        self.expect(open)?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct(c) if c == open => depth += 1,
                Tok::Punct(c) if c == close => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn selection(&mut self) -> Result<Vec<Field>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        while !self.eat('}') {
            if self.peek() == Some(&Tok::Spread) {
                return Err("fragments are not supported by the emulator".into());
            }
            let first = self.name()?;
            let (alias, name) = if self.eat(':') { (Some(first), self.name()?) } else { (None, first) };
            let mut args = Vec::new();
            if self.eat('(') {
                while !self.eat(')') {
                    let k = self.name()?;
                    self.expect(':')?;
                    args.push((k, self.value()?));
                }
            }
            if self.peek() == Some(&Tok::Punct('@')) {
                return Err("directives are not supported by the emulator".into());
            }
            let selection = if self.peek() == Some(&Tok::Punct('{')) { self.selection()? } else { Vec::new() };
            fields.push(Field { alias, name, args, selection });
        }
        Ok(fields)
    }

    fn value(&mut self) -> Result<GValue, String> {
        Ok(match self.next()? {
            Tok::Punct('$') => GValue::Var(self.name()?),
            Tok::Int(n) => GValue::Literal(Value::from(n)),
            Tok::Float(f) => GValue::Literal(Value::from(f)),
            Tok::Str(s) => GValue::Literal(Value::String(s)),
            Tok::Name(n) => GValue::Literal(match n.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::String(n),
            }),
            Tok::Punct('[') => {
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.value()?);
                }
                GValue::List(items)
            }
            Tok::Punct('{') => {
                let mut fields = Vec::new();
                while !self.eat('}') {
                    let k = self.name()?;
                    self.expect(':')?;
                    fields.push((k, self.value()?));
                }
                GValue::Object(fields)
            }
            other => return Err(format!("unexpected {other:?} in a value")),
        })
    }
}

/// Parses `doc` and picks the operation named `operation_name` (or the only one).
///
/// # Errors
/// A syntax error, a fragment, or no/ambiguous operation.
pub fn parse(doc: &str, operation_name: Option<&str>) -> Result<Operation, String> {
    let mut p = Parser { toks: tokenize(doc)?, pos: 0 };
    let mut ops: Vec<(Option<String>, Operation)> = Vec::new();
    while p.peek().is_some() {
        let (mutation, name) = match p.peek() {
            Some(Tok::Punct('{')) => (false, None),
            Some(Tok::Name(kw)) if kw == "query" || kw == "mutation" => {
                let mutation = kw == "mutation";
                p.pos += 1;
                let name = match p.peek() {
                    Some(Tok::Name(_)) => Some(p.name()?),
                    _ => None,
                };
                if p.peek() == Some(&Tok::Punct('(')) {
                    p.skip_group('(', ')')?;
                }
                (mutation, name)
            }
            Some(Tok::Name(kw)) if kw == "fragment" => return Err("fragments are not supported by the emulator".into()),
            other => return Err(format!("expected an operation, found {other:?}")),
        };
        let fields = p.selection()?;
        ops.push((name, Operation { mutation, fields }));
    }
    match operation_name {
        Some(n) => ops
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(n))
            .map(|(_, o)| o)
            .ok_or(format!("unknown operation {n}")),
        None if ops.len() == 1 => ops.pop().map(|(_, o)| o).ok_or_else(|| "no operation".into()),
        None => Err("operationName is required when the document has several operations".into()),
    }
}

/// Keeps only the selected fields of `value` (recursively, through lists),
/// renamed to their aliases; unknown fields are `null`.
#[must_use]
pub fn project(value: &Value, selection: &[Field]) -> Value {
    if selection.is_empty() {
        return value.clone();
    }
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|i| project(i, selection)).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            for f in selection {
                let v = map.get(&f.name).map_or(Value::Null, |v| project(v, &f.selection));
                out.insert(f.key().to_string(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_variables_aliases_literals_and_nesting() {
        let doc = r#"
            # a comment
            mutation create($input: ServiceCreateInput!, $n: Int = 3) {
              svc: serviceCreate(input: $input, flag: true, list: [1, "two", null], obj: {a: $n, b: ENUM_V, c: -1.5}) {
                id name
                edges { node { id } }
              }
            }
        "#;
        let op = parse(doc, Some("create")).unwrap();
        assert!(op.mutation);
        let f = &op.fields[0];
        assert_eq!((f.key(), f.name.as_str()), ("svc", "serviceCreate"));
        let args = f.arguments(&json!({"input": {"projectId": "p"}, "n": 7}));
        assert_eq!(
            args,
            json!({"input": {"projectId": "p"}, "flag": true, "list": [1, "two", null], "obj": {"a": 7, "b": "ENUM_V", "c": -1.5}})
        );
        let data = json!({"id": "s", "name": "n", "extra": 1, "edges": [{"node": {"id": "x", "more": 2}}]});
        assert_eq!(project(&data, &f.selection), json!({"id": "s", "name": "n", "edges": [{"node": {"id": "x"}}]}));
    }

    #[test]
    fn rejects_fragments_and_bad_syntax() {
        assert!(parse("{ a { ...F } }", None).is_err());
        assert!(parse("{ a(b: ) }", None).is_err());
        assert!(parse("query A { a } query B { b }", None).is_err());
        assert_eq!(parse("query A { a } query B { b }", Some("B")).unwrap().fields[0].name, "b");
        assert_eq!(
            parse(r#"{ a(s: "x\"y\u0041") }"#, None).unwrap().fields[0].args[0].1,
            GValue::Literal(json!("x\"yA"))
        );
    }
}
