// The official OpenAI Node SDK's Responses API against toolrelay: create,
// the stream helper's final response, retrieve and delete. Prints what the
// program gets as one JSON object.
// Usage: node openai_responses.mjs SCENARIO MODEL
//   SCENARIO: create | stream | lifecycle
// Env: TOOLRELAY_BASE_URL (…/v1), TOOLRELAY_API_KEY.
import OpenAI from "openai";

const [scenario, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: process.env.TOOLRELAY_BASE_URL, apiKey: process.env.TOOLRELAY_API_KEY, maxRetries: 0, timeout: 60_000 });

const WEATHER_TOOL = {
  type: "function",
  name: "get_weather",
  description: "Weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
  strict: true,
};

// An SDK error as data, so the test can assert on status and body.
async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (error) {
    if (error instanceof OpenAI.APIError) return { status: error.status, error: error.error };
    throw error;
  }
}

async function run() {
  switch (scenario) {
    case "create": {
      const response = await client.responses.create({ model, instructions: "Be brief.", input: "Say hi" });
      return { response, output_text: response.output_text };
    }
    case "stream": {
      // The stream helper, then a continuation of its tool call by previous_response_id.
      const stream = client.responses.stream({ model, input: "Weather in Paris?", tools: [WEATHER_TOOL] });
      const eventTypes = [];
      const argumentDeltas = [];
      stream.on("event", (event) => eventTypes.push(event.type));
      stream.on("response.function_call_arguments.delta", (event) => argumentDeltas.push(event.delta));
      const first = await stream.finalResponse();
      const call = first.output.find((item) => item.type === "function_call");
      const second = client.responses.stream({
        model,
        previous_response_id: first.id,
        input: [{ type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ forecast: "sunny" }) }],
      });
      const textDeltas = [];
      second.on("response.output_text.delta", (event) => textDeltas.push(event.delta));
      const final = await second.finalResponse();
      return { eventTypes, argumentDeltas, first, final, textDeltas, output_text: final.output_text };
    }
    case "lifecycle": {
      const created = await client.responses.create({ model, input: "Remember this", metadata: { ticket: "42" } });
      const retrieved = await client.responses.retrieve(created.id);
      const inputItems = [];
      for await (const item of client.responses.inputItems.list(created.id)) inputItems.push(item);
      const deleted = await client.responses.delete(created.id);
      const afterDelete = await outcome(client.responses.retrieve(created.id));
      return { created, retrieved, inputItems, deleted: deleted ?? null, afterDelete };
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

process.stdout.write(JSON.stringify(await run()));
