/**
 * bench/web.py's bare page, not part of the app: CopilotKit's <CopilotChat> on Citadel's
 * runtime surface and nothing else, the floor the web app's JavaScript is measured against.
 */
import { CopilotChat, CopilotKitProvider } from "@copilotkit/react-core/v2";
import "@copilotkit/react-core/v2/styles.css";
import { createRoot } from "react-dom/client";

createRoot(document.getElementById("root")!).render(
  <CopilotKitProvider runtimeUrl="/api/copilotkit">
    <CopilotChat />
  </CopilotKitProvider>,
);
