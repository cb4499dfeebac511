// The console's API key, one for the pages that read /console/api (status, config, the talk
// page's recordings): asked for when the API answers 401 (or 403: this machine only), kept in
// sessionStorage for this tab only, sent as a Bearer token.

const KEY = "echokit.apiKey";

// the request headers `extra`, with the key when there is one
export function keyHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// why a key is asked for after a refusal with `status` (the key held, if any, is dropped)
export function keyRefusal(status) {
  const stored = sessionStorage.getItem(KEY);
  sessionStorage.removeItem(KEY);
  if (status !== 401) return "The server answers this machine only";
  return stored ? "The server refused this API key" : "This server asks for its API key";
}

// a key typed into `input` and submitted with `form` is kept, then `then()` runs
export function onKeyForm(form, input, then) {
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    input.value = "";
    then();
  });
}
