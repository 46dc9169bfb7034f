//! Where each client API keeps the texts input guardrails read, in a decoded request: chat
//! `messages` (string content, or `text` parts), the Responses API's `instructions` and
//! `input` (a string, or items with text parts or `function_call_output` outputs), and the
//! strings of an embeddings `input` list. Each text is found with its place, so a redaction
//! is written back where it was. Exact type checks: these are decoded JSON.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyList, PyString};

/// A text's container and its key there.
enum Place<'py> {
    Key(Bound<'py, PyDict>, Bound<'py, PyString>),
    Index(Bound<'py, PyList>, usize),
}

/// The request's texts and where each one is.
pub(crate) struct RequestTexts<'py> {
    places: Vec<Place<'py>>,
    pub(crate) texts: Vec<PyBackedStr>,
}

fn exact_str(value: &Bound<'_, PyAny>) -> Option<PyBackedStr> {
    let s = value.cast_exact::<PyString>().ok()?;
    s.clone().try_into().ok()
}

impl<'py> RequestTexts<'py> {
    pub(crate) fn of(req: &Bound<'py, PyDict>) -> PyResult<Self> {
        let py = req.py();
        let mut out = Self {
            places: Vec::new(),
            texts: Vec::new(),
        };
        if let Some(messages) = req.get_item(intern!(py, "messages"))? {
            out.items(&messages)?;
        }
        let instructions = intern!(py, "instructions");
        if let Some(text) = req.get_item(instructions)?.as_ref().and_then(exact_str) {
            out.push(Place::Key(req.clone(), instructions.clone()), text);
        }
        let input = intern!(py, "input");
        if let Some(value) = req.get_item(input)? {
            match exact_str(&value) {
                Some(text) => out.push(Place::Key(req.clone(), input.clone()), text),
                None => out.items(&value)?,
            }
        }
        Ok(out)
    }

    fn push(&mut self, place: Place<'py>, text: PyBackedStr) {
        self.places.push(place);
        self.texts.push(text);
    }

    /// Chat messages or Responses input items (tool outputs included), or a list of strings.
    fn items(&mut self, items: &Bound<'py, PyAny>) -> PyResult<()> {
        let Ok(list) = items.cast_exact::<PyList>() else {
            return Ok(());
        };
        let py = items.py();
        let (content, text_key) = (intern!(py, "content"), intern!(py, "text"));
        for (i, item) in list.iter().enumerate() {
            let Ok(m) = item.cast_exact::<PyDict>() else {
                if let Some(text) = exact_str(&item) {
                    self.push(Place::Index(list.clone(), i), text);
                }
                continue;
            };
            let value = m.get_item(content)?;
            if let Some(text) = value.as_ref().and_then(exact_str) {
                self.push(Place::Key(m.clone(), content.clone()), text);
            } else if let Some(parts) = value.as_ref().and_then(|v| v.cast_exact::<PyList>().ok()) {
                for part in parts.iter() {
                    let Ok(part) = part.cast_exact::<PyDict>() else {
                        continue;
                    };
                    if let Some(text) = part.get_item(text_key)?.as_ref().and_then(exact_str) {
                        self.push(Place::Key(part.clone(), text_key.clone()), text);
                    }
                }
            } else if m
                .get_item(intern!(py, "type"))?
                .and_then(|t| exact_str(&t))
                .is_some_and(|t| &*t == "function_call_output")
            {
                let output = intern!(py, "output");
                if let Some(text) = m.get_item(output)?.as_ref().and_then(exact_str) {
                    self.push(Place::Key(m.clone(), output.clone()), text);
                }
            }
        }
        Ok(())
    }

    /// Writes the changed texts `(index, text)` back where they were found.
    pub(crate) fn write(&self, changed: Vec<(usize, String)>) -> PyResult<()> {
        for (i, text) in changed {
            match self.places.get(i) {
                Some(Place::Key(dict, key)) => dict.set_item(key, text)?,
                Some(Place::Index(list, index)) => list.set_item(*index, text)?,
                None => {}
            }
        }
        Ok(())
    }
}
