// What the console's pages share on screen: building an element, and the error line each page
// has (hidden while empty; every message is also kept in the page's `errors`, what the tests
// read).

// a `tag` element with `className` and the text `text` (when given)
export const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

// `show(message)` and `clear()` for the error line `node`, keeping each message in `errors`
export function errorLine(node, errors) {
  return {
    show(message) {
      errors.push(message);
      node.textContent = message;
      node.hidden = false;
    },
    clear() {
      node.hidden = true;
      node.textContent = "";
    },
  };
}
