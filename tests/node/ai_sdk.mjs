// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) against toolrelay, as a user sets it up:
// createOpenAI({ baseURL, apiKey })(model) is its default (Responses API) model,
// .chat(model) its Chat Completions model. Prints what the program gets as one JSON object.
// Usage: node ai_sdk.mjs SCENARIO API MODEL [no-store]
//   SCENARIO: generate | stream | tool | stream-tool
//   API:      responses (provider(model)) | chat (provider.chat(model))
//   no-store: providerOptions.openai.store = false (earlier items sent whole, not by id)
// Env: TOOLRELAY_BASE_URL (…/v1), TOOLRELAY_API_KEY.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

// Warnings go into the printed JSON (each step's `warnings`), not onto stdout.
globalThis.AI_SDK_LOG_WARNINGS = false;

const [scenario, api, modelId, storeOption] = process.argv.slice(2);
const provider = createOpenAI({ baseURL: process.env.TOOLRELAY_BASE_URL, apiKey: process.env.TOOLRELAY_API_KEY });
const model = api === "chat" ? provider.chat(modelId) : provider(modelId);
const common = { model, maxRetries: 0, ...(storeOption === "no-store" && { providerOptions: { openai: { store: false } } }) };

// What the tool's execute saw: the test checks the SDK ran it with the model's arguments.
const executed = [];
const tools = {
  get_weather: tool({
    description: "Weather in a city.",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    }),
    execute: async ({ city }) => {
      executed.push(city);
      return { city, forecast: "sunny" };
    },
  }),
};

const stepView = (step) => ({
  finishReason: step.finishReason,
  text: step.text,
  toolCalls: step.toolCalls.map((c) => ({ toolCallId: c.toolCallId, toolName: c.toolName, input: c.input })),
  toolResults: step.toolResults.map((r) => ({ toolCallId: r.toolCallId, toolName: r.toolName, output: r.output })),
  contentTypes: step.content.map((part) => part.type),
  responseId: step.response.id,
  warnings: step.warnings ?? [],
});

// The text deltas as a program reads them; a stream error part fails the script
// (streamText would only log it and end the stream).
async function textDeltas(result) {
  const deltas = [];
  for await (const part of result.fullStream) {
    if (part.type === "error") throw part.error;
    if (part.type === "text-delta") deltas.push(part.text);
  }
  return deltas;
}

async function run() {
  switch (scenario) {
    case "generate": {
      const result = await generateText({ ...common, system: "Be brief.", prompt: "Say hi" });
      return { text: result.text, finishReason: result.finishReason, usage: result.usage, steps: result.steps.map(stepView) };
    }
    case "stream": {
      const result = streamText({ ...common, system: "Be brief.", prompt: "Count to five" });
      const deltas = await textDeltas(result);
      return { deltas, text: await result.text, finishReason: await result.finishReason, usage: await result.usage, totalUsage: await result.totalUsage };
    }
    case "tool": {
      const result = await generateText({ ...common, prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(2) });
      return { text: result.text, executed, steps: result.steps.map(stepView), totalUsage: result.totalUsage };
    }
    case "stream-tool": {
      const result = streamText({ ...common, prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(2) });
      const deltas = await textDeltas(result);
      const steps = await result.steps;
      return { deltas, text: await result.text, executed, steps: steps.map(stepView), totalUsage: await result.totalUsage };
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

process.stdout.write(JSON.stringify(await run()));
