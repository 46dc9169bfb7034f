// k6 load test of an OpenAI-compatible chat endpoint: open-loop arrivals, non-streaming and SSE.
//
//   k6 run loadtest/k6/chat.js                                  # both scenarios, 350 req/s each
//   k6 run -e SCENARIOS=chat -e RATE=500 -e DURATION=2m loadtest/k6/chat.js
//   k6 run -e SCENARIOS=chat_stream -e BASE_URL=http://127.0.0.1:8080 loadtest/k6/chat.js
//
// constant-arrival-rate starts iterations on a fixed schedule whatever the latency (open loop),
// so a slow gateway shows up as latency and dropped_iterations instead of a lower offered rate.
// k6's HTTP client returns a streamed body only once it is complete: the SSE scenario measures
// the whole stream (http_req_duration) and time to first byte (stream_ttfb), which is the
// first chunk on the wire, not the first content delta; loadtest/locustfile.py measures the
// latter (TTFT).
import http from 'k6/http';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const API_KEY = __ENV.TOLLWAY_API_KEY || 'tollway-demo-key';
const MODEL = __ENV.TOLLWAY_MODEL || 'mock/gpt-4o-mini';
const METADATA = __ENV.TOLLWAY_METADATA || '{"project_id":"p1"}';
const RATE = parseInt(__ENV.RATE || '350', 10);
const DURATION = __ENV.DURATION || '1m';
const P95_MS = parseFloat(__ENV.P95_MS || '50');
const STREAM_P95_MS = parseFloat(__ENV.STREAM_P95_MS || '100');
const ENABLED = (__ENV.SCENARIOS || 'chat,chat_stream').split(',').map((s) => s.trim());

const streamTtfb = new Trend('stream_ttfb', true);
const streamChunks = new Counter('stream_chunks');

const URL = `${BASE_URL}/v1/chat/completions`;
const PARAMS = {
  headers: {
    Authorization: `Bearer ${API_KEY}`,
    'Content-Type': 'application/json',
    'X-TFY-METADATA': METADATA,
  },
  timeout: '60s',
};

function body(stream) {
  const b = {
    model: MODEL,
    messages: [
      { role: 'system', content: 'You are a concise assistant.' },
      { role: 'user', content: 'Say hello in one short sentence.' },
    ],
    max_tokens: 25,
  };
  if (stream) {
    b.stream = true;
  }
  return JSON.stringify(b);
}

const CHAT_BODY = body(false);
const STREAM_BODY = body(true);

function arrivalScenario(exec) {
  return {
    executor: 'constant-arrival-rate',
    exec,
    rate: RATE,
    timeUnit: '1s',
    duration: DURATION,
    // Enough VUs that arrivals never wait for a free one at a few ms latency; k6 adds up to max.
    preAllocatedVUs: Math.max(10, Math.ceil(RATE / 20)),
    maxVUs: Math.max(50, RATE),
  };
}

const ALL = {
  chat: {
    scenario: arrivalScenario('chat'),
    thresholds: { 'http_req_duration{scenario:chat}': [`p(95)<${P95_MS}`] },
  },
  chat_stream: {
    scenario: arrivalScenario('chatStream'),
    thresholds: { 'http_req_duration{scenario:chat_stream}': [`p(95)<${STREAM_P95_MS}`] },
  },
};

const scenarios = {};
const thresholds = {
  http_req_failed: ['rate<0.01'],
  checks: ['rate>0.99'],
};
for (const name of ENABLED) {
  if (!ALL[name]) {
    throw new Error(`unknown scenario ${name}; choose from ${Object.keys(ALL).join(', ')}`);
  }
  scenarios[name] = ALL[name].scenario;
  Object.assign(thresholds, ALL[name].thresholds);
}

export const options = { scenarios, thresholds, discardResponseBodies: false };

export function chat() {
  const res = http.post(URL, CHAT_BODY, PARAMS);
  check(res, {
    'status is 200': (r) => r.status === 200,
    'has choices': (r) => typeof r.body === 'string' && r.body.indexOf('"choices"') >= 0,
  });
}

export function chatStream() {
  const res = http.post(URL, STREAM_BODY, PARAMS);
  const text = typeof res.body === 'string' ? res.body : '';
  // SSE events are separated by a blank line; each carries one `data:` payload.
  const events = text.split('\n\n').filter((e) => e.startsWith('data:'));
  const content = events.filter((e) => e.indexOf('"content"') >= 0 && e !== 'data: [DONE]');
  streamChunks.add(content.length);
  streamTtfb.add(res.timings.waiting);
  check(res, {
    'status is 200': (r) => r.status === 200,
    'is event-stream': (r) => (r.headers['Content-Type'] || '').indexOf('text/event-stream') === 0,
    'ends with [DONE]': () => events.length > 0 && events[events.length - 1].trim() === 'data: [DONE]',
    'carries content': () => content.length > 0,
  });
}
