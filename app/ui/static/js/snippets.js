// The request just sent, as curl and as OpenAI Python SDK code (the key as an environment variable).

function shellQuote(text) {
  return "'" + text.replace(/'/g, "'\\''") + "'";
}

export function curlSnippet(origin, body) {
  return [
    `curl ${origin}/v1/chat/completions \\`,
    `  -H "Authorization: Bearer $TOOLRELAY_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n");
}

function pyString(text) {
  return JSON.stringify(text); // a JSON string literal is a valid Python string literal
}

function pyLiteral(value, indent) {
  const pad = "    ".repeat(indent + 1);
  const end = "    ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return pyString(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return "[\n" + value.map((v) => pad + pyLiteral(v, indent + 1) + ",").join("\n") + "\n" + end + "]";
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return "{\n" + entries.map(([k, v]) => pad + pyString(k) + ": " + pyLiteral(v, indent + 1) + ",").join("\n") + "\n" + end + "}";
}

export function pythonSnippet(origin, body) {
  const args = Object.entries(body).map(([k, v]) => `    ${k}=${pyLiteral(v, 1)},`);
  const lines = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${pyString(origin + "/v1")}, api_key=os.environ["TOOLRELAY_API_KEY"])`,
    "response = client.chat.completions.create(",
    ...args,
    ")",
  ];
  if (body.stream) lines.push("for chunk in response:", "    if chunk.choices and chunk.choices[0].delta.content:", '        print(chunk.choices[0].delta.content, end="")');
  else lines.push("print(response.choices[0].message.content)");
  return lines.join("\n");
}
