// Progressive enhancement for the account page; everything works without it except one-click copy.
for (const form of document.querySelectorAll('form[data-confirm]')) {
  form.addEventListener('submit', (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
for (const button of document.querySelectorAll('button[data-copy-target]')) {
  button.addEventListener('click', async () => {
    const input = document.getElementById(button.dataset.copyTarget);
    input.select();
    let copied = true;
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      copied = document.execCommand('copy');
    }
    button.textContent = copied ? 'Copied' : 'Press Ctrl+C to copy';
  });
}
