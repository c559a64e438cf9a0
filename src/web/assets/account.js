// Progressive enhancement for the account page; everything works without it except one-click copy.
for (const form of document.querySelectorAll('form[data-confirm]')) {
  form.addEventListener('submit', (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
for (const button of document.querySelectorAll('button[data-copy-target]')) {
  button.addEventListener('click', async () => {
    // The new key is in an input; the snippets are in <pre> blocks.
    const source = document.getElementById(button.dataset.copyTarget);
    const text = 'value' in source ? source.value : source.textContent;
    if ('select' in source) source.select();
    else window.getSelection().selectAllChildren(source);
    let copied = true;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      copied = document.execCommand('copy');
    }
    button.textContent = copied ? 'Copied' : 'Press Ctrl+C to copy';
  });
}
