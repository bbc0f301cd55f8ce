// Streams one chat completion with the official OpenAI Node SDK's stream helper
// (client.chat.completions.stream -> ChatCompletionStream) and prints the
// accumulated final message as JSON: what a Node program gets after the stream.
// Usage: node stream_final_message.mjs BASE_URL API_KEY REQUEST_JSON
import OpenAI from "openai";

const [baseURL, apiKey, request] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const stream = client.chat.completions.stream({ ...JSON.parse(request), stream: true });
const completion = await stream.finalChatCompletion();
process.stdout.write(JSON.stringify({ message: completion.choices[0].message, finish_reason: completion.choices[0].finish_reason }));
